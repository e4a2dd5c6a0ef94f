"""Tests of tinyformer.pretrained: Hugging Face GPT-2, BERT and Marian -> tinyformer, exactly.

Offline: every checkpoint is a randomly initialised ``transformers`` model of the real
architecture, saved with ``save_pretrained`` to a temporary directory. Nothing is
downloaded. The module is skipped when ``transformers`` is not installed
(``pip install tinyformer[hf]``; CI installs it from requirements.txt).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="tinyformer.pretrained needs transformers (pip install tinyformer[hf])"
)
from safetensors.torch import load_file, save_file  # noqa: E402  (after the skip)

from tinyformer.decode import generate, greedy_decode  # noqa: E402
from tinyformer.decoder import DecoderLM  # noqa: E402
from tinyformer.encoder import MaskedLM  # noqa: E402
from tinyformer.pretrained import config_from_hf, load_pretrained  # noqa: E402
from tinyformer.seq2seq import EncoderDecoder  # noqa: E402

TOL = 1e-5
V = 97  # small vocabularies: the last id is <pad>, id 1 is <eos>
PAD, EOS = V - 1, 1


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter (and Marian's final_logits_bias) random, LayerNorms included: a
    mapping that swapped a weight and a bias, or dropped a bias, could not pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # Marian's sinusoidal table: a formula, kept
                continue
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and name.endswith("weight"):  # LayerNorm gains: around 1
                p.copy_(1 + 0.2 * noise)
            elif p.dim() == 1:
                p.copy_(0.2 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5 * 2)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=g))
    return model.eval()


def right_padded(B: int, T: int, lengths: list[int], low: int, high: int, pad: int, seed: int):
    """(ids (B, T), attention_mask (B, T)): random real ids in [low, high), then pad."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (B, T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


def max_diff_at_real(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    real = mask.bool()
    return (a[real] - b[real]).abs().max().item()


# ------------------------------------------------------------------------------- GPT-2


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    config = transformers.GPT2Config(
        vocab_size=V, n_positions=40, n_embd=48, n_layer=2, n_head=4,
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = randomise(transformers.GPT2LMHeadModel(config), seed=1)
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    return hf, path


def test_gpt2_full_size_logits(tmp_path):
    """The real GPT-2 124M shape: 12 layers, D = 768, 12 heads, V = 50257, 1024 positions."""
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    assert hf.config.n_layer == 12 and hf.config.n_embd == 768 and hf.config.vocab_size == 50257
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert isinstance(ours, DecoderLM) and not ours.training
    assert ours.num_parameters() == hf.num_parameters() == 124_439_808
    ids, mask = right_padded(2, 12, [12, 7], 0, 50257, pad=0, seed=0)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(ids)
    assert max_diff_at_real(expected, got, mask) < TOL


def test_gpt2_logits_with_padding(gpt2):
    hf, path = gpt2
    ours = load_pretrained(path)
    assert ours.config.activation == "gelu_tanh" and not ours.config.scale_embedding
    ids, mask = right_padded(3, 16, [16, 9, 4], 0, V, pad=PAD, seed=2)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(ids)
    assert expected.std() > 1  # informative logits, not a near-uniform random model
    assert max_diff_at_real(expected, got, mask) < TOL


def test_gpt2_greedy_generation(gpt2):
    hf, path = gpt2
    ours = load_pretrained(path)
    prompt, _ = right_padded(3, 5, [5, 5, 5], 2, V - 1, pad=PAD, seed=3)
    with torch.no_grad():
        expected = hf.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, num_beams=1,
            max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD,
        )  # fmt: skip
    got = generate(ours, prompt, 20, temperature=0, eos_id=EOS, pad_id=PAD)
    assert torch.equal(got, expected)


def test_gpt2_dtype(gpt2):
    _, path = gpt2
    ours = load_pretrained(path, dtype=torch.float64)
    assert {p.dtype for p in ours.parameters()} == {torch.float64}


# -------------------------------------------------------------------------------- BERT


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """BertForPreTraining, like bert-base-uncased: MLM head, pooler and NSP head."""
    config = transformers.BertConfig(
        vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, max_position_embeddings=40, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = randomise(transformers.BertForPreTraining(config), seed=4)
    path = tmp_path_factory.mktemp("bert")
    hf.save_pretrained(path)
    return hf, path


def test_bert_logits_with_padding_and_token_types(bert):
    hf, path = bert
    ours = load_pretrained(path)
    assert isinstance(ours, MaskedLM)
    assert ours.config.layer_norm_eps == 1e-12 and ours.config.norm_first is False
    ids, mask = right_padded(3, 14, [14, 8, 3], 1, V, pad=0, seed=5)
    types = (torch.arange(14) >= 5).long().expand(3, 14) * mask
    with torch.no_grad():
        out = hf(ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, token_type_ids=types)
        got_default_types = ours(ids)
        expected_default_types = hf(ids, attention_mask=mask).prediction_logits
    assert out.prediction_logits.std() > 1
    assert max_diff_at_real(out.prediction_logits, got, mask) < TOL
    assert max_diff_at_real(expected_default_types, got_default_types, mask) < TOL


def test_bert_pooler(bert):
    hf, path = bert
    ours = load_pretrained(path)
    ids, mask = right_padded(2, 10, [10, 6], 1, V, pad=0, seed=6)
    with torch.no_grad():
        expected = hf.bert(ids, attention_mask=mask).pooler_output
        got = ours.pooler(ours.encoder(ids))
    assert (expected - got).abs().max().item() < TOL


def test_bert_without_pooler(tmp_path):
    config = transformers.BertConfig(
        vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert isinstance(ours, MaskedLM) and not hasattr(ours, "pooler")


# ------------------------------------------------------------------------------ Marian


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    """Marian as in the OPUS-MT models: SiLU ("swish"), sqrt(D) scale, shared embeddings,
    <pad> as the decoder's start token."""
    config = transformers.MarianConfig(
        vocab_size=V, decoder_vocab_size=V, d_model=48, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=96,
        decoder_ffn_dim=96, max_position_embeddings=40, activation_function="swish",
        scale_embedding=True, pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS,
        forced_eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = randomise(transformers.MarianMTModel(config), seed=7)
    path = tmp_path_factory.mktemp("marian")
    hf.save_pretrained(path)
    return hf, path


def test_marian_logits_with_source_padding(marian):
    hf, path = marian
    ours = load_pretrained(path)
    assert isinstance(ours, EncoderDecoder)
    assert ours.config.positional == "sinusoidal_halves" and ours.config.share_embeddings
    src, src_mask = right_padded(3, 11, [11, 6, 2], 2, PAD, pad=PAD, seed=8)
    tgt, _ = right_padded(3, 9, [9, 9, 9], 2, PAD, pad=PAD, seed=9)
    tgt[:, 0] = PAD  # decoder_start_token_id
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits
        got = ours(src, tgt)
    assert expected.std() > 1
    assert (expected - got).abs().max().item() < TOL


def test_marian_greedy_translation(marian):
    hf, path = marian
    ours = load_pretrained(path)
    src, src_mask = right_padded(3, 10, [10, 7, 4], 2, PAD, pad=PAD, seed=10)
    start = ours.hf_config.decoder_start_token_id
    with torch.no_grad():
        expected = hf.generate(
            input_ids=src, attention_mask=src_mask, do_sample=False, num_beams=1,
            max_new_tokens=25,
        )  # fmt: skip
    got, _ = greedy_decode(ours, src, 25, bos_id=start, eos_id=EOS, pad_id=PAD)
    assert torch.equal(got, expected)


# ---------------------------------------------------------- checkpoints as the Hub has them


def as_on_the_hub(family: str, tensors: dict) -> dict:
    """The names and extra tensors of the real checkpoints (gpt2, bert-base-uncased,
    opus-mt-*), older than today's ``save_pretrained``."""
    if family == "gpt2":  # GPT2LMHeadModel saved from GPT2Model: no prefix, mask buffers
        tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
        for i in range(2):
            tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 40, 40))
            tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    elif family == "bert":  # LayerNorm gamma/beta, position_ids, the tied decoder copy
        renamed = {}
        for k, v in tensors.items():
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma")
            renamed[k.replace("LayerNorm.bias", "LayerNorm.beta")] = v
        tensors = renamed
        tensors["bert.embeddings.position_ids"] = torch.arange(40)[None]
        tensors["cls.predictions.decoder.weight"] = tensors[
            "bert.embeddings.word_embeddings.weight"
        ].clone()
    else:  # tied copies of the shared embedding and the sinusoidal tables
        shared = tensors["model.shared.weight"]
        for copy in ("model.encoder.embed_tokens", "model.decoder.embed_tokens", "lm_head"):
            tensors[f"{copy}.weight"] = shared.clone()
        from tinyformer.layers import SinusoidalPositionalEncoding

        table = SinusoidalPositionalEncoding(48, 40, halves=True).pe
        for stack in ("encoder", "decoder"):
            tensors[f"model.{stack}.embed_positions.weight"] = table.clone()
    return tensors


@pytest.mark.parametrize("family", ["gpt2", "bert", "marian"])
def test_hub_layout_loads_the_same(family, request, tmp_path):
    _, path = request.getfixturevalue(family)
    (tmp_path / "config.json").write_bytes((path / "config.json").read_bytes())
    tensors = as_on_the_hub(family, load_file(str(path / "model.safetensors")))
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    a, b = load_pretrained(path).state_dict(), load_pretrained(tmp_path).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_marian_position_table_is_checked(marian, tmp_path):
    _, path = marian
    (tmp_path / "config.json").write_bytes((path / "config.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    interleaved = torch.zeros(40, 48)  # a table in another layout must not load silently
    rewrite_weights(
        tmp_path, lambda t: t.update({"model.encoder.embed_positions.weight": interleaved})
    )
    with pytest.raises(ValueError, match="embed_positions.weight' is not the sinusoidal"):
        load_pretrained(tmp_path)


# ---------------------------------------------------------------------- bad checkpoints


def rewrite_weights(path, edit) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture
def small_gpt2_dir(tmp_path):
    config = transformers.GPT2Config(vocab_size=V, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    return tmp_path


def test_missing_tensor_is_named(small_gpt2_dir):
    rewrite_weights(small_gpt2_dir, lambda t: t.pop("transformer.h.0.mlp.c_fc.bias"))
    with pytest.raises(ValueError, match=r"missing tensor\(s\).*: h\.0\.mlp\.c_fc\.bias"):
        load_pretrained(small_gpt2_dir)


def test_unexpected_tensor_is_named(small_gpt2_dir):
    rewrite_weights(small_gpt2_dir, lambda t: t.update(extra_head=torch.zeros(3)))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\): extra_head"):
        load_pretrained(small_gpt2_dir)


def test_misshapen_tensor_is_named(small_gpt2_dir):
    rewrite_weights(small_gpt2_dir, lambda t: t.update({"transformer.ln_f.bias": torch.zeros(3)}))
    with pytest.raises(
        ValueError, match=r"'transformer\.ln_f\.bias' has shape \(3,\), expected \(16,\)"
    ):
        load_pretrained(small_gpt2_dir)


def test_unsupported_model_type(tmp_path):
    transformers.RobertaConfig(vocab_size=V).save_pretrained(tmp_path)  # config only
    with pytest.raises(ValueError, match="unsupported model_type 'roberta'"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize(
    "hf_config, option",
    [
        (transformers.GPT2Config(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse"),
        (transformers.GPT2Config(activation_function="quick_gelu"), "activation_function"),
        (transformers.BertConfig(position_embedding_type="relative_key"), "position_embedding"),
        (transformers.MarianConfig(normalize_before=True), "normalize_before"),
        (transformers.MarianConfig(add_final_layer_norm=True), "add_final_layer_norm"),
    ],
)
def test_unsupported_options_raise(hf_config, option):
    with pytest.raises(ValueError, match=f"unsupported .*{option}"):
        config_from_hf(hf_config)


def test_opus_mt_config_fields_are_accepted():
    """The fields of Helsinki-NLP/opus-mt-en-de's config.json that older transformers wrote
    (extra_pos_embeddings is a leftover that Marian never read)."""
    hf_config = transformers.MarianConfig(
        vocab_size=58101, decoder_vocab_size=58101, pad_token_id=58100,
        decoder_start_token_id=58100, eos_token_id=0, activation_function="swish",
        scale_embedding=True, normalize_before=False, normalize_embedding=False,
        add_final_layer_norm=False, add_bias_logits=False, static_position_embeddings=True,
        extra_pos_embeddings=58101, max_position_embeddings=512,
    )  # fmt: skip
    config = config_from_hf(hf_config)
    assert (config.activation, config.pad_id, config.max_len) == ("silu", 58100, 512)


def test_a_hub_id_is_downloaded_only_when_not_a_directory(gpt2, monkeypatch):
    """No network here: the download function is replaced by one that hands back the
    local checkpoint and records what was asked for."""
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(gpt2[1])

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    load_pretrained(gpt2[1])  # a directory: no download
    assert calls == []
    model = load_pretrained("someone/tiny-gpt2")
    assert isinstance(model, DecoderLM)
    assert calls and calls[0][0] == "someone/tiny-gpt2" and "config.json" in calls[0][1]


def test_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory"):
        load_pretrained(tmp_path / "nowhere")


# ------------------------------------------------------------- other checkpoint layouts


def tiny_gpt2(seed: int, n_embd: int = 32, **options) -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(
        vocab_size=V, n_positions=16, n_embd=n_embd, n_layer=2, n_head=2, **options
    )
    torch.manual_seed(seed)
    return randomise(transformers.GPT2LMHeadModel(config), seed=seed)


def same_logits(hf, ours) -> bool:
    ids, mask = right_padded(2, 12, [12, 5], 0, V, pad=PAD, seed=11)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(ids)
    return max_diff_at_real(expected, got, mask) < TOL


def test_pytorch_model_bin(tmp_path):
    """The legacy format: config.json and a pickled state dict, pytorch_model.bin (what
    ``save_pretrained(safe_serialization=False)`` wrote before transformers 5)."""
    hf = tiny_gpt2(seed=12)
    hf.save_pretrained(tmp_path, safe_serialization=False)
    if not (tmp_path / "pytorch_model.bin").is_file():
        # transformers >= 5 ignores safe_serialization=False and writes safetensors only:
        # write the legacy file as older versions did (config.json is already there).
        for file in tmp_path.glob("*.safetensors"):
            file.unlink()
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert not list(tmp_path.glob("*.safetensors"))
    assert (tmp_path / "pytorch_model.bin").is_file()
    assert same_logits(hf, load_pretrained(tmp_path))


def test_sharded_safetensors(tmp_path):
    hf = tiny_gpt2(seed=13, n_embd=64)  # about 110k parameters: 440 KB in float32
    hf.save_pretrained(tmp_path, max_shard_size="200KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert same_logits(hf, load_pretrained(tmp_path))


def test_gpt2_untied_output_layer(tmp_path):
    hf = tiny_gpt2(seed=14, tie_word_embeddings=False)
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert not ours.config.tie_weights
    assert not torch.equal(ours.lm_head.weight, ours.decoder.tok_emb.weight)
    assert same_logits(hf, ours)


def test_marian_with_separate_embeddings(tmp_path):
    """share_encoder_decoder_embeddings=False: a source and a target vocabulary of their
    own (sizes V and V_tgt), the output layer tied to the target embedding."""
    if "share_encoder_decoder_embeddings" not in transformers.MarianConfig().to_dict():
        pytest.skip("this transformers has no share_encoder_decoder_embeddings option")
    V_tgt = 89
    config = transformers.MarianConfig(
        vocab_size=V, decoder_vocab_size=V_tgt, share_encoder_decoder_embeddings=False,
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=24, activation_function="swish", scale_embedding=True,
        pad_token_id=V_tgt - 1, decoder_start_token_id=V_tgt - 1, eos_token_id=EOS,
        forced_eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = randomise(transformers.MarianMTModel(config), seed=15)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert not ours.config.share_embeddings
    assert ours.encoder.tok_emb.weight.shape[0] == V
    assert ours.decoder.tok_emb.weight.shape[0] == V_tgt
    src, _ = right_padded(2, 10, [10, 10], 2, V, pad=V - 1, seed=16)
    tgt, _ = right_padded(2, 7, [7, 7], 2, V_tgt - 1, pad=V_tgt - 1, seed=17)
    tgt[:, 0] = V_tgt - 1
    with torch.no_grad():
        expected = hf(input_ids=src, decoder_input_ids=tgt).logits
        got = ours(src, tgt)
    assert expected.shape[-1] == V_tgt
    assert (expected - got).abs().max().item() < TOL


# ------------------------------------------------------------------------ path or Hub id


@pytest.fixture
def no_downloads(monkeypatch):
    """Any download attempt fails the test."""
    hub = pytest.importorskip("huggingface_hub")

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args} {kwargs}")

    monkeypatch.setattr(hub, "snapshot_download", refuse)
    monkeypatch.setattr(hub, "hf_hub_download", refuse)


def test_missing_path_is_named(tmp_path, no_downloads):
    missing = tmp_path / "missing"
    for given in (missing, str(missing)):
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
            load_pretrained(given)


@pytest.mark.parametrize("given", ["./missing", "../missing", "a/b/c", "~/missing", "x y"])
def test_strings_not_shaped_like_hub_ids_are_paths(given, tmp_path, no_downloads, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing|a/b/c|x y"):
        load_pretrained(given)


def test_a_file_is_not_a_checkpoint(tmp_path, no_downloads):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path / "config.json")


def test_tilde_is_expanded(tmp_path, monkeypatch, no_downloads):
    home = tmp_path
    tiny_gpt2(seed=18).save_pretrained(home / "checkpoints" / "gpt2")
    monkeypatch.setenv("HOME", str(home))
    assert isinstance(load_pretrained("~/checkpoints/gpt2"), DecoderLM)
    with pytest.raises(FileNotFoundError, match=re.escape(str(home / "nowhere"))):
        load_pretrained("~/nowhere")


# ------------------------------------------------------------------ the optional extra


def test_core_never_imports_transformers():
    """Every tinyformer module imports without transformers (pretrained.py included: it
    imports it lazily, inside its functions)."""
    code = (
        "import importlib, pkgutil, sys, tinyformer\n"
        "for m in pkgutil.iter_modules(tinyformer.__path__):\n"
        "    importlib.import_module('tinyformer.' + m.name)\n"
        "assert 'tinyformer.pretrained' in sys.modules\n"
        "loaded = [m for m in ('transformers', 'safetensors', 'huggingface_hub')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_transformers_says_how_to_install(gpt2, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ImportError, match=r"pip install tinyformer\[hf\]"):
        load_pretrained(gpt2[1])


def test_config_json_is_all_it_reads(gpt2):
    """config_from_hf works on the saved config alone (what the chapter shows)."""
    _, path = gpt2
    hf_config = transformers.AutoConfig.from_pretrained(path)
    config = config_from_hf(hf_config)
    saved = json.loads((path / "config.json").read_text())
    assert (config.d_model, config.n_layers, config.max_len) == (
        saved["n_embd"],
        saved["n_layer"],
        saved["n_positions"],
    )
