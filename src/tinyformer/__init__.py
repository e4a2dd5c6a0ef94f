"""tinyformer: the transformer built from scratch, one chapter of the course at a time.

Modules, with the chapter that grows each one:

- ``language``   the toy language: grammar, sampler, exact probabilities, entropy,
                 Bayes-optimal masked prediction, translation with word alignment (1, 7, 11)
- ``vocab``      tokens <-> ids, special tokens, padded batches (1)
- ``layers``     token embeddings, sinusoidal and learned positions, feed-forward (2, 4)
- ``attention``  scaled dot-product attention, masks, multi-head attention, KV cache (3)
- ``decoder``    the decoder block (with optional cross attention) and the GPT-style LM (4, 10)
- ``train``      seeded training loop, warmup + cosine schedule, LM loss (5)
- ``generate``   temperature / top-k sampling with and without the KV cache (5)
- ``encoder``    the encoder block and stack, masked-LM and classification heads (6, 7, 8)
- ``seq2seq``    the encoder-decoder transformer, greedy and beam decoding (10, 11)
- ``compat``     weight loading from PyTorch's built-in modules, for parity checks (3, 4, 6, 10)
- ``plot``       attention heatmaps and loss curves
"""

__version__ = "0.1.0"
