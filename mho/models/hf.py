"""Hugging Face `transformers` Wav2Vec2ForCTC models, converted into mho's `Wav2Vec2CTC`.

A local directory as `save_pretrained` writes it (config.json, the weights, vocab.json and,
optionally, preprocessor_config.json) becomes an mho model with the same weights and the
same outputs: log_softmax of HF's logits on its feature extractor's input, to float
rounding. It is a plain mho model, not a wrapper, so every mho tool runs on it unchanged
(`mho eval`, `mho transcribe`, `mho lpa sweep / convert`, export). Needs the optional
extra: pip install 'mho[hf]'.

The CTC vocabulary (vocab.json, characters with "|" between words) becomes the payload's
`vocabulary`, the blank (HF's pad token) moved to index 0 as mho's models have it: the CTC
head's rows move with it. HF's utterance normalization (preprocessor_config.json's
do_normalize, the feature extractor's default) goes into the model (`input_norm="hf"`).
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mho.errors import MhoError
from mho.models.transformer import SAMPLE_RATE, Wav2Vec2CTC, Wav2Vec2CTCConfig

ARCHITECTURE = "Wav2Vec2ForCTC"


def load_hf_wav2vec2(directory: Path) -> tuple[Wav2Vec2CTC, dict[str, Any]]:
    """The HF Wav2Vec2ForCTC model in `directory` as an eval-mode mho model and a payload
    shaped like a checkpoint's (model_type, model_config, vocabulary, metadata, state_dict)."""
    from mho.models.zoo import WAV2VEC2_TYPE

    directory = Path(directory)
    described = _read_json(directory / "config.json", "not a Hugging Face model directory")
    architectures = described.get("architectures") or [ARCHITECTURE]
    if described.get("model_type") != "wav2vec2" or ARCHITECTURE not in architectures:
        kind = described.get("model_type"), *architectures
        raise MhoError(f"{directory} holds a {'/'.join(map(str, kind))} model; mho converts "
                       f"wav2vec2 {ARCHITECTURE} models only")
    try:
        from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    except ImportError:
        raise MhoError("Hugging Face models need transformers: pip install 'mho[hf]'") from None
    with _quiet(), _one_line(directory / "config.json"):
        hf_config = Wav2Vec2Config.from_pretrained(directory, local_files_only=True)
    config = _config(hf_config, _do_normalize(directory), directory)
    blank = hf_config.pad_token_id or 0  # HF's CTC blank
    if not 0 <= blank < config.vocab_size:
        raise MhoError(f"{directory}: pad_token_id {blank} (the CTC blank) is not an output")
    tokens = _tokens(directory, config.vocab_size)
    order = [blank, *(i for i in range(config.vocab_size) if i != blank)]  # blank first
    # from_pretrained, not safetensors / torch.load directly: it reads every file layout
    # (safetensors or pytorch_model.bin, sharded or not) and renames legacy parameters (the
    # positional conv's weight_g / weight_v), so one mapping below fits every checkpoint.
    with _quiet(), _one_line(f"{directory}: cannot read the weights"):
        hf, info = Wav2Vec2ForCTC.from_pretrained(directory, config=hf_config,
                                                  local_files_only=True, output_loading_info=True)
    missing = sorted(info["missing_keys"])
    if missing:
        raise MhoError(f"{directory}: weights missing for {len(missing)} parameters "
                       f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    model = Wav2Vec2CTC(config)
    model.load_state_dict(_state_dict(hf.state_dict(), model, order))
    return model.eval(), {
        "model_type": WAV2VEC2_TYPE,
        "model_config": config.to_dict(),
        "vocabulary": [tokens[i] for i in order],
        "metadata": {"source": str(directory.resolve()), "hf": {
            "architecture": ARCHITECTURE, "transformers_version": hf_config.transformers_version,
            "blank": tokens[blank], "do_normalize": config.input_norm == "hf"}},
        "state_dict": model.state_dict(),
    }


def _config(hf: Any, do_normalize: bool, directory: Path) -> Wav2Vec2CTCConfig:
    """mho's config of HF's `Wav2Vec2Config`, or MhoError naming what mho does not model."""
    unsupported = {
        "a conv adapter after the encoder (add_adapter)": hf.add_adapter,
        "attention adapters (adapter_attn_dim)": getattr(hf, "adapter_attn_dim", None),
        f"feat_extract_norm {hf.feat_extract_norm!r}": hf.feat_extract_norm not in
        ("layer", "group"),
        f"activations {hf.hidden_act!r} / {hf.feat_extract_activation!r} (mho: 'gelu')":
            (hf.hidden_act, hf.feat_extract_activation) != ("gelu", "gelu"),
        f"convs of different widths (conv_dim {list(hf.conv_dim)})": len(set(hf.conv_dim)) > 1,
        f"layer_norm_eps {hf.layer_norm_eps} (mho: 1e-5)": hf.layer_norm_eps != 1e-5,
    }
    reasons = [reason for reason, present in unsupported.items() if present]
    if reasons:
        raise MhoError(f"{directory}: unsupported wav2vec2 features: {'; '.join(reasons)}")
    return Wav2Vec2CTCConfig(
        vocab_size=hf.vocab_size, conv_channels=hf.conv_dim[0],
        conv_kernels=tuple(hf.conv_kernel), conv_strides=tuple(hf.conv_stride),
        conv_bias=hf.conv_bias, conv_norm=hf.feat_extract_norm,
        input_norm="hf" if do_normalize else "none",
        dim=hf.hidden_size, num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads, ff_dim=hf.intermediate_size,
        pos_conv_kernel=hf.num_conv_pos_embeddings,
        pos_conv_groups=hf.num_conv_pos_embedding_groups, pre_norm=hf.do_stable_layer_norm,
        dropout=hf.hidden_dropout, attention_dropout=hf.attention_dropout,
        mask_time_prob=hf.mask_time_prob if hf.apply_spec_augment else 0.0,
        mask_time_length=hf.mask_time_length,
    )


def _hf_names(config: Wav2Vec2CTCConfig) -> dict[str, str]:
    """mho module name -> HF module name, for every module with parameters but the
    positional conv's weight (weight-normed in HF) and masked_frame."""
    names = {"projection_norm": "wav2vec2.feature_projection.layer_norm",
             "projection": "wav2vec2.feature_projection.projection",
             "pos_conv": "wav2vec2.encoder.pos_conv_embed.conv",
             "final_norm": "wav2vec2.encoder.layer_norm", "ctc_head": "lm_head"}
    for i in range(len(config.conv_kernels)):  # encoder.layers: conv, norm, GELU per conv
        hf = f"wav2vec2.feature_extractor.conv_layers.{i}"
        names |= {f"encoder.layers.{3 * i}": f"{hf}.conv",
                  f"encoder.layers.{3 * i + 1}": f"{hf}.layer_norm"}
    for i in range(config.num_layers):
        hf = f"wav2vec2.encoder.layers.{i}"
        names |= {f"layers.{i}.attention_norm": f"{hf}.layer_norm",
                  f"layers.{i}.ff_norm": f"{hf}.final_layer_norm",
                  f"layers.{i}.feed_forward.0": f"{hf}.feed_forward.intermediate_dense",
                  f"layers.{i}.feed_forward.3": f"{hf}.feed_forward.output_dense"}
        names |= {f"layers.{i}.attention.{ours}": f"{hf}.attention.{theirs}_proj" for
                  ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"),
                                   ("out_proj", "out"))}
    return names


def _state_dict(hf_state: dict[str, torch.Tensor], model: Wav2Vec2CTC, order: list[int]
                ) -> dict[str, torch.Tensor]:
    """`model`'s state dict filled from HF's; the CTC head's outputs in `order`."""
    names, state = _hf_names(model.config), {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if key == "pos_conv.weight":  # weight norm over dim 2, folded: g * v / ||v||
            g, v = (hf_state[f"{names['pos_conv']}.parametrizations.weight.original{i}"]
                    for i in (0, 1))
            state[key] = g * v / v.norm(dim=(0, 1), keepdim=True)  # [D, D / groups, K]
        elif key == "masked_frame":  # HF keeps it only where it trained with masking
            state[key] = hf_state.get("wav2vec2.masked_spec_embed", torch.zeros_like(value))
        else:
            state[key] = hf_state[f"{names[module]}.{leaf}"]
    for leaf in ("weight", "bias"):
        state[f"ctc_head.{leaf}"] = state[f"ctc_head.{leaf}"][order]
    return state


def _tokens(directory: Path, vocab_size: int) -> list[str]:
    """Tokens by id from vocab.json; ids it lacks (tokens the tokenizer adds, like <s>) get
    a placeholder "<id>" that decoders drop as a special token."""
    vocab = _read_json(directory / "vocab.json", "the CTC vocabulary is missing")
    if not all(isinstance(i, int) for i in vocab.values()):
        raise MhoError(f"{directory / 'vocab.json'}: not one token -> id map (vocabularies "
                       "per language are not supported)")
    by_id = {i: token for token, i in vocab.items()}
    if any(not 0 <= i < vocab_size for i in by_id):
        raise MhoError(f"{directory / 'vocab.json'}: ids outside the model's {vocab_size} "
                       "outputs")
    return [by_id.get(i, f"<{i}>") for i in range(vocab_size)]


def _do_normalize(directory: Path) -> bool:
    """Whether HF's feature extractor normalizes each utterance (its default: yes)."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return True
    extractor = _read_json(path, "")
    if extractor.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise MhoError(f"{path}: sampling_rate {extractor['sampling_rate']}; mho runs "
                       f"{SAMPLE_RATE} Hz models")
    return bool(extractor.get("do_normalize", True))


def _read_json(path: Path, missing: str) -> dict[str, Any]:
    if not path.is_file():
        raise MhoError(f"{path.parent}: no {path.name} ({missing})")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MhoError(f"cannot read {path}: {error}") from None
    if not isinstance(content, dict):
        raise MhoError(f"{path}: expected a JSON object")
    return content


@contextmanager
def _one_line(what: object) -> Iterator[None]:
    """transformers' errors as one-line MhoErrors: "<what> (<its last line>)"; the last
    line is the specific one in its multi-line messages."""
    try:
        yield
    except Exception as error:  # file, JSON, validation and torch errors have many types
        last = (str(error).strip() or type(error).__name__).splitlines()[-1].strip()
        raise MhoError(f"{what} ({last})") from None


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers without its progress bars and warnings (mho reports problems itself)."""
    from transformers.utils import logging

    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
