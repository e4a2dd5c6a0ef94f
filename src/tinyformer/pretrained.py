"""Real checkpoints: Hugging Face GPT-2, BERT and Marian weights in tinyformer models.

Each part of the course built one family of real models: GPT-2 is Part I's decoder, BERT
Part II's encoder, Marian (the OPUS-MT translators) Part III's encoder-decoder. This module
reads a checkpoint written by Hugging Face ``transformers`` (``save_pretrained``) and
returns the tinyformer model that computes the same function, its weights renamed (and,
for GPT-2, transposed):

* ``model_type`` ``"gpt2"``   -> :class:`tinyformer.decoder.DecoderLM`
* ``model_type`` ``"bert"``   -> :class:`tinyformer.encoder.MaskedLM` (with its pooler when
  the checkpoint has one)
* ``model_type`` ``"marian"`` -> :class:`tinyformer.seq2seq.EncoderDecoder`

It needs the optional extra ``pip install tinyformer[hf]`` (``transformers``, which brings
``safetensors`` and ``huggingface_hub``); the rest of tinyformer never imports it. Nothing
is downloaded unless :func:`load_pretrained` is given a Hub id (a string shaped ``name`` or
``org/name`` that is not an existing path).

What differs between a family and the course's defaults lives in
:class:`~tinyformer.config.TransformerConfig`; :func:`config_from_hf` fills it in. An
option the course's blocks cannot express (e.g. GPT-2's ``scale_attn_by_inverse_layer_idx``,
BERT's relative positions, Marian's pre-LN variant) raises ``ValueError`` naming it, rather
than loading a model that computes something else.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tinyformer.config import TransformerConfig

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "Pooler",
    "bert_config",
    "config_from_hf",
    "convert_state_dict",
    "gpt2_config",
    "load_pretrained",
    "marian_config",
]

SUPPORTED_MODEL_TYPES = ("gpt2", "bert", "marian")

_INSTALL_HINT = "pip install tinyformer[hf]"

# Hugging Face's activation names -> TransformerConfig.activation. "gelu_new" (GPT-2) and
# "gelu_pytorch_tanh" are the same tanh approximation of GELU; "swish" is SiLU (Marian).
_ACTIVATION_NAMES = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "swish": "silu",
    "silu": "silu",
}


def _require(module: str):
    """Import ``module`` (part of the ``hf`` extra) or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"tinyformer.pretrained needs {module!r} to read Hugging Face checkpoints; "
            f"install it with `{_INSTALL_HINT}`"
        ) from err


# ------------------------------------------------------------------------------ configs


def _activation(hf_config, field: str) -> str:
    name = getattr(hf_config, field)
    if name not in _ACTIVATION_NAMES:
        raise ValueError(
            f"unsupported {hf_config.model_type} option: {field}={name!r} "
            f"(supported: {sorted(_ACTIVATION_NAMES)})"
        )
    return _ACTIVATION_NAMES[name]


def _refuse(hf_config, field: str, bad: Callable[[object], bool], default=None) -> None:
    """Raise ValueError when the checkpoint's ``field`` has a value we cannot compute."""
    value = getattr(hf_config, field, default)
    if bad(value):
        raise ValueError(
            f"unsupported {hf_config.model_type} option: {field}={value!r}; "
            "tinyformer.pretrained cannot load this checkpoint exactly"
        )


def gpt2_config(hf_config) -> TransformerConfig:
    """A ``transformers.GPT2Config`` -> the TransformerConfig of the same DecoderLM.

    GPT-2 is the course's pre-LN decoder with learned positions, the tanh form of GELU,
    no sqrt(D) embedding scale and a tied LM head without bias. Dropout is set to 0:
    a loaded model is for inference (``dataclasses.replace`` it to fine-tune).
    """
    _refuse(hf_config, "scale_attn_weights", lambda v: v is False, default=True)
    _refuse(hf_config, "scale_attn_by_inverse_layer_idx", bool)
    _refuse(hf_config, "add_cross_attention", bool)
    return TransformerConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.n_embd,
        n_heads=hf_config.n_head,
        n_layers=hf_config.n_layer,
        d_ff=hf_config.n_inner or 4 * hf_config.n_embd,
        max_len=hf_config.n_positions,
        dropout=0.0,
        norm_first=True,
        positional="learned",
        activation=_activation(hf_config, "activation_function"),
        tie_weights=bool(getattr(hf_config, "tie_word_embeddings", True)),
        pad_id=None,
        scale_embedding=False,
        layer_norm_eps=hf_config.layer_norm_epsilon,
        final_norm=True,
        head_bias=False,
    )


def bert_config(hf_config) -> TransformerConfig:
    """A ``transformers.BertConfig`` -> the TransformerConfig of the same MaskedLM.

    BERT is the course's post-LN encoder with learned positions, segment (token type)
    embeddings, a LayerNorm right after the embeddings, exact GELU, LayerNorm epsilon
    1e-12, no sqrt(D) scale and an MLM head with an output bias.
    """
    _refuse(hf_config, "position_embedding_type", lambda v: v != "absolute", "absolute")
    _refuse(hf_config, "is_decoder", bool)
    _refuse(hf_config, "add_cross_attention", bool)
    return TransformerConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_heads=hf_config.num_attention_heads,
        n_layers=hf_config.num_hidden_layers,
        d_ff=hf_config.intermediate_size,
        max_len=hf_config.max_position_embeddings,
        dropout=0.0,
        norm_first=False,
        positional="learned",
        activation=_activation(hf_config, "hidden_act"),
        tie_weights=bool(getattr(hf_config, "tie_word_embeddings", True)),
        pad_id=hf_config.pad_token_id,
        scale_embedding=False,
        layer_norm_eps=hf_config.layer_norm_eps,
        embedding_norm=True,
        n_token_types=hf_config.type_vocab_size,
        final_norm=False,
        head_bias=True,
    )


def marian_config(hf_config) -> TransformerConfig:
    """A ``transformers.MarianConfig`` -> the TransformerConfig of the same EncoderDecoder.

    Marian is the 2017 encoder-decoder: post-LN, sinusoidal positions (in Marian's layout:
    all sines, then all cosines), token vectors scaled by sqrt(D), one embedding matrix for
    source, target and output, an output bias (``final_logits_bias``) and SiLU ("swish")
    in the feed-forward networks of the OPUS-MT models.
    """
    for field in ("normalize_before", "add_final_layer_norm", "normalize_embedding"):
        _refuse(hf_config, field, bool)
    _refuse(hf_config, "add_bias_logits", bool)
    _refuse(hf_config, "static_position_embeddings", lambda v: v is False, default=True)
    if getattr(hf_config, "share_encoder_decoder_embeddings", True):
        _refuse(hf_config, "tie_word_embeddings", lambda v: v is False, default=True)
    for enc, dec in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if getattr(hf_config, enc) != getattr(hf_config, dec):
            raise ValueError(
                f"unsupported marian option: {enc}={getattr(hf_config, enc)} differs from "
                f"{dec}={getattr(hf_config, dec)} (tinyformer's two stacks share them)"
            )
    src_vocab = hf_config.vocab_size
    tgt_vocab = getattr(hf_config, "decoder_vocab_size", None) or src_vocab
    share = bool(getattr(hf_config, "share_encoder_decoder_embeddings", True))
    return TransformerConfig(
        vocab_size=tgt_vocab,
        d_model=hf_config.d_model,
        n_heads=hf_config.decoder_attention_heads,
        n_layers=hf_config.decoder_layers,
        d_ff=hf_config.decoder_ffn_dim,
        max_len=hf_config.max_position_embeddings,
        dropout=0.0,
        norm_first=False,
        positional="sinusoidal_halves",
        activation=_activation(hf_config, "activation_function"),
        tie_weights=bool(getattr(hf_config, "tie_word_embeddings", True)),
        pad_id=hf_config.pad_token_id,
        scale_embedding=bool(hf_config.scale_embedding),
        layer_norm_eps=1e-5,  # Marian's LayerNorms use PyTorch's default
        embedding_norm=False,
        final_norm=False,
        head_bias=True,
        src_vocab_size=src_vocab,
        n_encoder_layers=hf_config.encoder_layers,
        share_embeddings=share,
    )


_CONFIGS = {"gpt2": gpt2_config, "bert": bert_config, "marian": marian_config}


def config_from_hf(hf_config) -> TransformerConfig:
    """A ``transformers`` config (GPT-2, BERT or Marian) -> the matching TransformerConfig.

    Raises ValueError for another ``model_type`` or an option tinyformer cannot compute.
    """
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in _CONFIGS:
        raise ValueError(
            f"unsupported model_type {model_type!r}: tinyformer.pretrained loads "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return _CONFIGS[model_type](hf_config)


# ------------------------------------------------------------------------ reading tensors


class _Checkpoint:
    """The checkpoint's tensors, taken one by one; what is never taken is 'unexpected'."""

    def __init__(self, tensors: dict[str, torch.Tensor], source: str):
        self.tensors = dict(tensors)
        self.source = source
        self.missing: list[str] = []
        self.original = {name: name for name in tensors}  # for messages: the file's names
        self.prefix = ""  # the prefix the file's names carry, if any

    def rename(self, new_name: Callable[[str], str]) -> None:
        """Read the names through ``new_name`` (messages keep the file's names)."""
        renamed, original = {}, {}
        for name, t in self.tensors.items():
            renamed[new_name(name)] = t
            original[new_name(name)] = self.original[name]
        self.tensors, self.original = renamed, original

    def strip_prefix(self, prefix: str) -> None:
        """Accept names with or without ``prefix``: Hugging Face saves a bare model
        (``GPT2Model``, ``BertModel``) without the prefix its twin with a head uses
        (``transformer.``, ``bert.``), and older checkpoints often come that way."""
        if any(name.startswith(prefix) for name in self.tensors):
            self.prefix = prefix
        self.rename(lambda name: name.removeprefix(prefix))

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Remove and return tensor ``name``, checking its shape (a zeros placeholder and a
        note in ``missing`` when it is absent, so that every missing name is reported)."""
        if name not in self.tensors:
            self.missing.append(name)
            return torch.zeros(shape)
        t = self.tensors.pop(name)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"checkpoint {self.source}: tensor {self.original[name]!r} has shape "
                f"{tuple(t.shape)}, expected {tuple(shape)} from its config"
            )
        return t

    def drop(self, name: str) -> None:
        """Forget a tensor the model does not need (a tied copy, a fixed buffer)."""
        self.tensors.pop(name, None)

    def finish(self) -> None:
        """Raise when a tensor was missing or another one was left over."""
        problems = []
        if self.missing:
            where = f" (named without their prefix {self.prefix!r})" if self.prefix else ""
            problems.append(f"missing tensor(s){where}: {', '.join(self.missing)}")
        if self.tensors:
            left = sorted(self.original[name] for name in self.tensors)
            problems.append(f"unexpected tensor(s): {', '.join(left)}")
        if problems:
            raise ValueError(
                f"checkpoint {self.source} does not match its config: " + "; ".join(problems)
            )


def _attention(ck: _Checkpoint, hf: str, ours: str, D: int, names: tuple[str, ...]) -> dict:
    """The q, k, v (and out) projections, separate ``nn.Linear``s in BERT and Marian too;
    ``names`` are the Hugging Face names in that order (BERT's has no out_proj here)."""
    out = {}
    ours_names = ("q_proj", "k_proj", "v_proj", "out_proj")[: len(names)]
    for hf_name, our_name in zip(names, ours_names, strict=True):
        out[f"{ours}.{our_name}.weight"] = ck.take(f"{hf}.{hf_name}.weight", (D, D))
        out[f"{ours}.{our_name}.bias"] = ck.take(f"{hf}.{hf_name}.bias", (D,))
    return out


def _norm(ck: _Checkpoint, hf: str, ours: str, D: int) -> dict:
    return {
        f"{ours}.weight": ck.take(f"{hf}.weight", (D,)),
        f"{ours}.bias": ck.take(f"{hf}.bias", (D,)),
    }


def _linear(ck: _Checkpoint, hf: str, ours: str, d_in: int, d_out: int) -> dict:
    return {
        f"{ours}.weight": ck.take(f"{hf}.weight", (d_out, d_in)),
        f"{ours}.bias": ck.take(f"{hf}.bias", (d_out,)),
    }


def _gpt2_weights(ck: _Checkpoint, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """GPT-2's names -> DecoderLM's. GPT-2 stores its projections as ``Conv1D``: y = x W + b
    with W of shape (D_in, D_out), the transpose of ``nn.Linear``'s (D_out, D_in); and
    ``c_attn`` holds the query, key and value projections side by side, (D, 3 D)."""
    ck.strip_prefix("transformer.")
    D, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    sd = {
        "decoder.tok_emb.weight": ck.take("wte.weight", (V, D)),
        "decoder.pos.weight": ck.take("wpe.weight", (cfg.max_len, D)),
    }
    for i in range(cfg.n_layers):
        h, b = f"h.{i}", f"decoder.blocks.{i}"
        ck.drop(f"{h}.attn.bias")  # old checkpoints store the causal mask as a buffer
        ck.drop(f"{h}.attn.masked_bias")
        sd |= _norm(ck, f"{h}.ln_1", f"{b}.attn_norm", D)
        qkv_w = ck.take(f"{h}.attn.c_attn.weight", (D, 3 * D)).t()  # (3D, D): q; k; v rows
        qkv_b = ck.take(f"{h}.attn.c_attn.bias", (3 * D,))
        for name, w, bias in zip(
            ("q_proj", "k_proj", "v_proj"), qkv_w.chunk(3), qkv_b.chunk(3), strict=True
        ):
            sd[f"{b}.self_attn.{name}.weight"] = w
            sd[f"{b}.self_attn.{name}.bias"] = bias
        sd[f"{b}.self_attn.out_proj.weight"] = ck.take(f"{h}.attn.c_proj.weight", (D, D)).t()
        sd[f"{b}.self_attn.out_proj.bias"] = ck.take(f"{h}.attn.c_proj.bias", (D,))
        sd |= _norm(ck, f"{h}.ln_2", f"{b}.ff_norm", D)
        sd[f"{b}.ff.linear1.weight"] = ck.take(f"{h}.mlp.c_fc.weight", (D, F)).t()
        sd[f"{b}.ff.linear1.bias"] = ck.take(f"{h}.mlp.c_fc.bias", (F,))
        sd[f"{b}.ff.linear2.weight"] = ck.take(f"{h}.mlp.c_proj.weight", (F, D)).t()
        sd[f"{b}.ff.linear2.bias"] = ck.take(f"{h}.mlp.c_proj.bias", (D,))
    sd |= _norm(ck, "ln_f", "decoder.norm_f", D)
    if cfg.tie_weights:
        ck.drop("lm_head.weight")  # a tied copy of wte, when saved at all
        sd["lm_head.weight"] = sd["decoder.tok_emb.weight"]
    else:
        sd["lm_head.weight"] = ck.take("lm_head.weight", (V, D))
    return sd


def _bert_weights(ck: _Checkpoint, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """BERT's names -> MaskedLM's (encoder stack, MLM head, and the pooler when present)."""
    # Old checkpoints (bert-base-uncased) name LayerNorm parameters gamma and beta.
    ck.rename(lambda k: k.replace("LayerNorm.gamma", "LayerNorm.weight"))
    ck.rename(lambda k: k.replace("LayerNorm.beta", "LayerNorm.bias"))
    ck.strip_prefix("bert.")
    D, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    ck.drop("embeddings.position_ids")  # a buffer 0 .. max_len - 1, not a weight
    # The next-sentence-prediction head of BertForPreTraining: not part of a masked LM.
    ck.drop("cls.seq_relationship.weight")
    ck.drop("cls.seq_relationship.bias")
    sd = {
        "encoder.tok_emb.weight": ck.take("embeddings.word_embeddings.weight", (V, D)),
        "encoder.pos.weight": ck.take("embeddings.position_embeddings.weight", (cfg.max_len, D)),
        "encoder.type_emb.weight": ck.take(
            "embeddings.token_type_embeddings.weight", (cfg.n_token_types, D)
        ),
    }
    sd |= _norm(ck, "embeddings.LayerNorm", "encoder.emb_norm", D)
    for i in range(cfg.n_layers):
        h, b = f"encoder.layer.{i}", f"encoder.blocks.{i}"
        sd |= _attention(ck, f"{h}.attention.self", f"{b}.self_attn", D, ("query", "key", "value"))
        # BERT keeps the attention's output projection with its LayerNorm, not its heads.
        sd |= _linear(ck, f"{h}.attention.output.dense", f"{b}.self_attn.out_proj", D, D)
        sd |= _norm(ck, f"{h}.attention.output.LayerNorm", f"{b}.attn_norm", D)
        sd |= _linear(ck, f"{h}.intermediate.dense", f"{b}.ff.linear1", D, F)
        sd |= _linear(ck, f"{h}.output.dense", f"{b}.ff.linear2", F, D)
        sd |= _norm(ck, f"{h}.output.LayerNorm", f"{b}.ff_norm", D)
    sd |= _linear(ck, "cls.predictions.transform.dense", "head.dense", D, D)
    sd |= _norm(ck, "cls.predictions.transform.LayerNorm", "head.norm", D)
    sd["head.output.bias"] = ck.take("cls.predictions.bias", (V,))
    ck.drop("cls.predictions.decoder.bias")  # a copy of cls.predictions.bias
    if cfg.tie_weights:
        ck.drop("cls.predictions.decoder.weight")  # tied to the word embeddings
        sd["head.output.weight"] = sd["encoder.tok_emb.weight"]
    else:
        sd["head.output.weight"] = ck.take("cls.predictions.decoder.weight", (V, D))
    if ck.has("pooler.dense.weight") or ck.has("pooler.dense.bias"):
        sd |= _linear(ck, "pooler.dense", "pooler.dense", D, D)
    return sd


def _check_sinusoidal(stored: torch.Tensor, d_model: int, name: str, source: str) -> None:
    """A stored position table must be the formula we rebuild (sines, then cosines)."""
    from tinyformer.layers import SinusoidalPositionalEncoding

    formula = SinusoidalPositionalEncoding(d_model, stored.shape[0], halves=True).pe
    # Rounding to the stored dtype moves each entry (of size <= 1) by up to half its eps;
    # allow a few eps, and never less than 1e-4 (float32 tables computed another way).
    dtype = stored.dtype if stored.is_floating_point() else torch.float32
    atol = max(8 * torch.finfo(dtype).eps, 1e-4)
    if stored.shape != formula.shape or not torch.allclose(
        stored.double(), formula.double(), atol=atol, rtol=0
    ):
        raise ValueError(
            f"checkpoint {source}: tensor {name!r} is not the sinusoidal table (all sines, "
            "then all cosines) that tinyformer computes"
        )


def _marian_stack(ck, cfg, hf: str, ours: str, n_layers: int, cross: bool) -> dict:
    D, F = cfg.d_model, cfg.d_ff
    table = f"{hf}.embed_positions.weight"
    if ck.has(table):  # older checkpoints store the sinusoidal table: check it, rebuild it
        _check_sinusoidal(ck.tensors.pop(table), D, table, ck.source)
    sd = {}
    for i in range(n_layers):
        h, b = f"{hf}.layers.{i}", f"{ours}.blocks.{i}"
        projections = ("q_proj", "k_proj", "v_proj", "out_proj")
        sd |= _attention(ck, f"{h}.self_attn", f"{b}.self_attn", D, projections)
        sd |= _norm(ck, f"{h}.self_attn_layer_norm", f"{b}.attn_norm", D)
        if cross:
            sd |= _attention(ck, f"{h}.encoder_attn", f"{b}.cross_attn", D, projections)
            sd |= _norm(ck, f"{h}.encoder_attn_layer_norm", f"{b}.cross_norm", D)
        sd |= _linear(ck, f"{h}.fc1", f"{b}.ff.linear1", D, F)
        sd |= _linear(ck, f"{h}.fc2", f"{b}.ff.linear2", F, D)
        sd |= _norm(ck, f"{h}.final_layer_norm", f"{b}.ff_norm", D)
    return sd


def _marian_weights(ck: _Checkpoint, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """Marian's names -> EncoderDecoder's. One shared matrix when ``share_embeddings``."""
    D, V, V_src = cfg.d_model, cfg.vocab_size, cfg.src_vocab_size
    n_enc = cfg.n_encoder_layers or cfg.n_layers
    sd = _marian_stack(ck, cfg, "model.encoder", "encoder", n_enc, cross=False)
    sd |= _marian_stack(ck, cfg, "model.decoder", "decoder", cfg.n_layers, cross=True)
    if cfg.share_embeddings:
        shared = ck.take("model.shared.weight", (V, D))
        for copy in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
            ck.drop(copy)  # older checkpoints save the tied copies too
        src_emb = tgt_emb = shared
    else:
        ck.drop("model.shared.weight")
        src_emb = ck.take("model.encoder.embed_tokens.weight", (V_src, D))
        tgt_emb = ck.take("model.decoder.embed_tokens.weight", (V, D))
    sd["encoder.tok_emb.weight"] = src_emb
    sd["decoder.tok_emb.weight"] = tgt_emb
    if cfg.tie_weights:
        ck.drop("lm_head.weight")
        sd["lm_head.weight"] = tgt_emb
    else:
        sd["lm_head.weight"] = ck.take("lm_head.weight", (V, D))
    sd["lm_head.bias"] = ck.take("final_logits_bias", (1, V)).reshape(V)
    return sd


_WEIGHTS = {"gpt2": _gpt2_weights, "bert": _bert_weights, "marian": _marian_weights}


def convert_state_dict(
    model_type: str,
    tensors: dict[str, torch.Tensor],
    config: TransformerConfig,
    source: str = "(in memory)",
) -> dict[str, torch.Tensor]:
    """A Hugging Face state dict -> the tinyformer state dict of the same weights.

    ``tensors`` are the checkpoint's tensors by their Hugging Face names (what
    ``save_pretrained`` writes); ``config`` is ``config_from_hf`` of its config. Tied copies
    and fixed buffers the checkpoint may carry (GPT-2's causal-mask buffers, BERT's
    ``position_ids`` and next-sentence head, Marian's sinusoidal tables) are dropped;
    any other tensor left over, or any tensor the model needs and the checkpoint lacks,
    raises ValueError naming them all.
    """
    if model_type not in _WEIGHTS:
        raise ValueError(
            f"unsupported model_type {model_type!r}: tinyformer.pretrained loads "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    ck = _Checkpoint(tensors, source)
    sd = _WEIGHTS[model_type](ck, config)
    ck.finish()
    return sd


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory: safetensors (one file or shards) preferred,
    else ``pytorch_model.bin`` read with ``torch.load(weights_only=True)``."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file() or index.is_file():
        safetensors_torch = _require("safetensors.torch")
        if single.is_file():
            return safetensors_torch.load_file(str(single))
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors |= safetensors_torch.load_file(str(directory / shard))
        return tensors
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {directory}"
    )


def _download(repo_id: str) -> Path:
    """Fetch a Hub checkpoint's config and weights (not its other files) to the local cache."""
    hub = _require("huggingface_hub")
    local = hub.snapshot_download(
        repo_id,
        allow_patterns=[
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "model-*.safetensors",
            "model.safetensors.index.json",
        ],
    )
    local = Path(local)
    if not any(local.glob("*.safetensors")):  # older repositories: no safetensors
        local = Path(hub.hf_hub_download(repo_id, "pytorch_model.bin")).parent
    return local


# A Hub id: "name" or "org/name", letters, digits, "_", "." and "-" (``\w`` covers "_").
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def _is_hub_id(text: str) -> bool:
    """``name`` or ``org/name``; not ``.``, ``..``, ``./x`` or ``../x`` (relative paths)."""
    return bool(_HUB_ID.match(text)) and not text.startswith(".") and ".." not in text


class Pooler(nn.Module):
    """BERT's pooler: h (B, T, D) -> tanh(dense(h[:, 0])) (B, D), one vector per sentence.

    The vector of the first token ([CLS]) through a dense layer and tanh: what BERT's
    next-sentence head read during pre-training, and what ``BertModel`` returns as its
    "pooled output". A MaskedLM loaded from a checkpoint that has one carries it as
    ``model.pooler``: ``model.pooler(model.encoder(ids))``.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))


def _build(model_type: str, config: TransformerConfig, with_pooler: bool) -> nn.Module:
    if model_type == "gpt2":
        from tinyformer.decoder import DecoderLM

        return DecoderLM(config)
    if model_type == "bert":
        from tinyformer.encoder import MaskedLM

        model = MaskedLM(config)
        if with_pooler:
            model.pooler = Pooler(config.d_model)
        return model
    from tinyformer.seq2seq import EncoderDecoder

    return EncoderDecoder(config)


def load_pretrained(path_or_id: str | os.PathLike, *, dtype: torch.dtype = torch.float32):
    """Load a Hugging Face GPT-2, BERT or Marian checkpoint as a tinyformer model.

    Args:
        path_or_id: a directory written by ``save_pretrained`` (``config.json`` and
            ``model.safetensors``, its shards, or ``pytorch_model.bin``; ``~`` is expanded),
            or a Hub id such as ``"gpt2"``, ``"bert-base-uncased"`` or
            ``"Helsinki-NLP/opus-mt-en-de"``: a string shaped ``name`` or ``org/name`` that
            is not an existing path, downloaded (config and weights only).
        dtype: the floating-point type of the returned model's parameters.

    Returns:
        In eval mode: a ``DecoderLM`` (gpt2), a ``MaskedLM`` (bert; with ``.pooler`` when the
        checkpoint has one) or an ``EncoderDecoder`` (marian), built from
        ``config_from_hf(hf_config)`` and loaded with ``load_state_dict(strict=True)``.
        The Hugging Face config is kept as ``model.hf_config`` (its special token ids:
        ``eos_token_id``, ``pad_token_id``, ``decoder_start_token_id`` ...).

    Raises:
        ValueError: an unsupported ``model_type`` or option, or a checkpoint with missing,
            unexpected or misshapen tensors (each named).
        ImportError: ``transformers`` is not installed (``pip install tinyformer[hf]``).
        FileNotFoundError: a path that does not exist (anything not shaped like a Hub id:
            absolute, ``./``, ``~``, deeper than ``org/name`` ...), an existing file, or a
            directory without weights; the message names the path.
    """
    transformers = _require("transformers")
    path = Path(path_or_id).expanduser()
    text = os.fspath(path_or_id)
    if path.is_dir():
        directory = path
    elif path.exists():
        raise FileNotFoundError(f"expected a checkpoint directory, got the file {str(path)!r}")
    elif isinstance(path_or_id, str) and _is_hub_id(text):
        directory = _download(text)
    else:
        raise FileNotFoundError(
            f"no checkpoint directory {str(path)!r} (and {text!r} is not a Hub id, "
            "which is shaped 'name' or 'org/name')"
        )
    hf_config = transformers.AutoConfig.from_pretrained(str(directory))
    config = config_from_hf(hf_config)
    tensors = _read_tensors(directory)
    sd = convert_state_dict(hf_config.model_type, tensors, config, source=str(path_or_id))
    model = _build(
        hf_config.model_type, config, with_pooler=any(k.startswith("pooler.") for k in sd)
    )
    expected = set(model.state_dict())
    if set(sd) != expected:  # the mapping must cover every parameter: a bug here, not in the file
        raise RuntimeError(
            f"tinyformer.pretrained maps {hf_config.model_type} incompletely: "
            f"unmapped {sorted(expected - set(sd))}, unknown {sorted(set(sd) - expected)}"
        )
    model.to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True)
    model.hf_config = hf_config
    return model.eval()
