"""tinyformer: the transformer built from scratch, one chapter of the course at a time.

Modules (each grown by the chapter named beside it):

- ``language``  the toy language: grammar, sampler, exact probabilities (chapter 1)
- ``vocab``     tokens <-> ids, special tokens, padded batches (chapter 1)
"""

__version__ = "0.1.0"
