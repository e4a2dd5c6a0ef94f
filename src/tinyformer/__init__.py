"""tinyformer: the transformer built from scratch, one chapter of the course at a time.

Modules, with the chapters that grow each one:

- ``language``     the toy language: grammar, sampler, exact probabilities, entropy,
                   Bayes-optimal masked prediction, translation with word alignment (1, 7, 11)
- ``vocab``        tokens <-> ids, special tokens, padded batches (1)
- ``layers``       token embeddings, sinusoidal and learned positions, feed-forward (2, 4)
- ``attention``    scaled dot-product attention, masks, multi-head attention, the KV cache,
                   ``record_attention`` to see any model's attention maps (3, 5)
- ``blocks``       ``TransformerBlock``: the one block, causal (4), not (6), with cross
                   attention (9, 10)
- ``config``       ``TransformerConfig``: every model's hyper-parameters (4)
- ``stack``        ``TransformerStack``: embeddings -> blocks -> final norm, written once (4)
- ``decoder``      ``DecoderLM``: decoder stack + LM head (4, 5)
- ``objectives``   the LM loss, masked-LM corruption and loss (5, 7)
- ``train``        seeding, warmup + cosine schedule, eval mode, AdamW, a small loop (4, 5)
- ``decode``       one step loop for sampling, greedy decoding and beam search (5, 11)
- ``encoder``      ``MaskedLM`` and ``SequenceClassifier``: encoder stack + head (6, 7, 8)
- ``seq2seq``      ``EncoderDecoder``: encoder stack + decoder stack with cross attention (10, 11)
- ``torch_bridge`` load weights from PyTorch's built-in transformer modules (3, 4, 6, 10)
- ``plot``         attention heatmaps and loss curves
- ``checks``       the shared input checks of the public entry points
- ``fast``         the optimisations the benchmarks use, each tested against its simple twin
- ``pretrained``   Hugging Face GPT-2 / BERT / Marian checkpoints -> tinyformer (needs the
                   ``hf`` extra; appendix *The real ones*)
"""

__version__ = "0.2.0"
