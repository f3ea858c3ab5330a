"""Models by name: the shipped checkpoints in ``mho/assets/models`` or a checkpoint path.

Shipped checkpoints are packed small: the weights of quantized layers (about 95% of the
parameters) as int8 integers plus one float scale, exactly what QAT computes with; the
rest (norms, biases, attention biases, observer statistics) stays fp32, because fp16 there
moves activations across 8-bit quantization steps. Float models (wav2vec2 / LPA) store their
matrices (Linear and Conv weights) as int8 with one scale per output channel and the rest as
fp16: half the size of fp16, and their cards are scored on exactly these weights. No
optimizer state.
"""

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mho.errors import MhoError
from mho.models.checkpoint import load_checkpoint, save_checkpoint

MODEL_DIR = Path(str(resources.files("mho") / "assets" / "models"))
MODEL_TYPE = "conformer-ctc"  # the memristor / QAT family
WAV2VEC2_TYPE = "wav2vec2-ctc"  # the LPA host family
MODEL_TYPES = (MODEL_TYPE, WAV2VEC2_TYPE)


def model_type(model: torch.nn.Module) -> str:
    """The checkpoint ``model_type`` of a model instance."""
    from mho.models.transformer import Wav2Vec2CTC

    return WAV2VEC2_TYPE if isinstance(model, Wav2Vec2CTC) else MODEL_TYPE


def shipped_models() -> list[str]:
    return sorted(p.stem for p in MODEL_DIR.glob("*.pt"))


def model_card(name: str) -> dict[str, Any]:
    """The card written beside a shipped model (``<name>.json``)."""
    path = MODEL_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {"name": name}


def card_layer_count(card: dict[str, Any]) -> int:
    """How many attention layers a model card's architecture has: ``num_layers`` in the
    wav2vec2 family, ``num_blocks`` in a Conformer."""
    architecture = card["architecture"]
    return architecture.get("num_layers", architecture.get("num_blocks"))


def checkpoint_path(spec: str) -> Path | None:
    """The checkpoint ``spec`` names (shipped name, checkpoint path or a Hugging Face model
    directory), or None if it names none."""
    if spec in shipped_models():
        return MODEL_DIR / f"{spec}.pt"
    path = Path(spec)
    return path if path.suffix == ".pt" or path.is_file() or path.is_dir() else None


def build_model(payload: dict[str, Any]) -> torch.nn.Module:
    from mho.models.conformer import ConformerCTC, ConformerCTCConfig
    from mho.models.transformer import Wav2Vec2CTC, Wav2Vec2CTCConfig

    families = {MODEL_TYPE: (ConformerCTC, ConformerCTCConfig),
                WAV2VEC2_TYPE: (Wav2Vec2CTC, Wav2Vec2CTCConfig)}
    if payload.get("model_type") not in families:
        raise MhoError(f"unsupported model type {payload.get('model_type')!r}")
    model_class, config_class = families[payload["model_type"]]
    try:
        return model_class(config_class(**payload["model_config"]))
    except (TypeError, KeyError) as error:
        raise MhoError(f"checkpoint's model config does not fit this mho: {error}") from None


def load_model(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from a training or packed checkpoint, in eval mode; a directory is a
    Hugging Face wav2vec2 CTC model, converted (see :mod:`mho.models.hf`)."""
    if Path(path).is_dir():
        from mho.models.hf import load_hf_wav2vec2

        return load_hf_wav2vec2(Path(path))
    payload = load_checkpoint(path)
    model = build_model(payload)
    try:
        model.load_state_dict(float_state_dict(payload))
    except RuntimeError as error:
        first_line = str(error).splitlines()[1 if "\n" in str(error) else 0].strip()
        raise MhoError(f"{path}: weights do not fit the model ({first_line})") from None
    return model.eval(), payload


def float_state_dict(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights in float32: a packed checkpoint's integer weights times their
    scales, its other tensors (and a training checkpoint's) as stored."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    for name, integers in payload.get("integer_weights", {}).items():
        state[f"{name}.weight"] = integers.float() * payload["weight_scales"][name]
    return state


def init_metadata(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata of the checkpoint a training run started from (its ``config.init``: a
    path or a shipped model's name), or None for a run from scratch."""
    init = payload.get("config", {}).get("init")
    return load_checkpoint(checkpoint_path(str(init)) or init)["metadata"] if init else None


def training_run(metadata: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """One training run as a model card lists it: its data, epochs, wall time, speed in
    seconds of audio per second of training (epochs x data / wall time) and where it ran
    (``machine`` None: a run from before machines were recorded)."""
    epochs = metadata.get("epochs", len(metadata["history"]))
    seconds = metadata["train_seconds"]
    return {
        "init": Path(str(config["init"])).stem if config.get("init") else None,
        "weight_bits": config.get("weight_bits"),
        "data_hours": metadata["train_hours"],
        "epochs": epochs,
        "wall_minutes": seconds / 60,
        "audio_seconds_per_second": (metadata["train_hours"] * 3600 * epochs / seconds
                                     if seconds > 0 else None),
        "device": metadata.get("device"),
        "machine": metadata.get("machine"),
        "threads": metadata.get("threads", config.get("threads")),
    }


def training_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """Data and time of a model's whole training: a QAT run's own metadata covers only the
    fine-tuning, its float pre-training is the checkpoint named by ``config.init``. Packed
    checkpoints carry the summary, so re-packing one (e.g. to re-score it) keeps it.
    ``training_runs`` lists each run of the lineage that recorded itself (`training_run`)."""
    metadata = payload["metadata"]
    if "summary" in metadata:
        return metadata["summary"]
    run = training_run(metadata, payload.get("config", {}))
    pretraining = init_metadata(payload)
    if pretraining is None:
        return {"train_hours": metadata["train_hours"],
                "train_minutes": metadata["train_seconds"] / 60, "qat_hours": 0.0,
                "history": metadata["history"], "training_runs": [run]}
    if "summary" not in pretraining:  # QAT from a float training run
        return {
            "train_hours": pretraining["train_hours"],
            "train_minutes": (pretraining["train_seconds"] + metadata["train_seconds"]) / 60,
            "qat_hours": metadata["train_hours"],
            "history": [*pretraining["history"], *metadata["history"]],
            "training_runs": [training_run(pretraining, {}), run],
        }
    before = pretraining["summary"]  # fine-tuning of a packed (e.g. shipped) model
    return {
        **before,
        "train_minutes": before["train_minutes"] + metadata["train_seconds"] / 60,
        "history": [*before["history"], *metadata["history"]],
        "fine_tuned_from": run["init"],
        "fine_tune_hours": metadata["train_hours"],
        "training_runs": [*before.get("training_runs", []), run],
    }


def models_table(cards: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The `mho models` table of model cards: (columns, rows of text), one WER column per
    set any card was scored on ("greedy / LM", "-" where a card has no score)."""
    sets = list(dict.fromkeys(r["data"] for c in cards for r in c.get("results", [])))
    columns = ["name", "pe", "bits", "LPA layers", "params", "train h", "train min",
               "dev WER (greedy)", *(f"{s} greedy / LM" for s in sets)]

    def score(wer: dict[tuple[str, str], float], data: str) -> str:
        if (data, "greedy") not in wer:
            return "-"
        return f"{wer[data, 'greedy']:.2f} / {wer.get((data, 'lm'), float('nan')):.2f}"

    rows = []
    for card in cards:
        wer = {(r["data"], r["decoder"]): r["wer"] for r in card.get("results", [])}
        lpa_layers = card.get("lpa_layers")
        rows.append([
            card["name"], card["pe"], str(card["weight_bits"] or "float"),
            f"{len(lpa_layers)} of {card_layer_count(card)}" if lpa_layers else "-",
            f"{card['params'] / 1e6:.2f} M",
            f"{card['train_hours']:.1f}", f"{card['train_minutes']:.0f}",
            f"{card['history'][-1]['dev_wer']:.2f}" if card["history"] else "-",
            *(score(wer, s) for s in sets),
        ])
    return columns, rows


def training_runs_table(card: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """`mho models runs`: a card's training runs (`training_run`) as (columns, rows of
    text), oldest first; "-" where a run did not record a value."""
    columns = ["run", "from", "bits", "data h", "epochs", "wall min", "audio s/s", "device",
               "machine", "threads"]

    def text(value: Any, form: str = "{}") -> str:
        return "-" if value is None else form.format(value)

    rows = [[str(number), text(run["init"]), text(run["weight_bits"] or "float"),
             text(run["data_hours"], "{:.2f}"), text(run["epochs"]),
             text(run["wall_minutes"], "{:.1f}"), text(run["audio_seconds_per_second"], "{:.0f}"),
             text(run["device"]), text(run["machine"]), text(run["threads"])]
            for number, run in enumerate(card.get("training_runs", []), start=1)]
    return columns, rows


CONVERSION_KEYS = ("lpa_order", "lpa_order_kind", "conversion_seconds")


def conversion_record(payload: dict[str, Any]) -> dict[str, Any]:
    """What `mho lpa convert` recorded of an LPA model's conversion (the order the layers were
    replaced in, the order's kind, its time): the checkpoint's own, or, for a model trained on
    after its conversion, its ``config.init``'s (a training run records no conversion)."""
    metadata = payload["metadata"]
    if "lpa_order" not in metadata:
        metadata = init_metadata(payload) or metadata
    return {key: metadata[key] for key in CONVERSION_KEYS if key in metadata}


def pack_model(model: torch.nn.Module, payload: dict[str, Any], target: Path) -> int:
    """Write a loaded model (and its checkpoint's ``payload``) in shipping form to ``target``;
    returns the file size in bytes."""
    if getattr(model.config, "quant", None):
        quantized = model.quantized_layers()
        integers = {n: q.integer_weight().to(torch.int8) for n, q in quantized.items()}
        scales = {n: q.weight_scale for n, q in quantized.items()}
        state = {k: v for k, v in model.state_dict().items()
                 if k.removesuffix(".weight") not in quantized}
    else:
        integers, scales, state = _pack_float(model)
    save_checkpoint(target, {
        "model_type": payload["model_type"],
        "model_config": payload["model_config"],
        "vocabulary": payload["vocabulary"],
        "metadata": {**payload["metadata"], "summary": training_summary(payload)},
        "state_dict": state,
        "integer_weights": integers,
        "weight_scales": scales,
    })
    return target.stat().st_size


def _pack_float(model: torch.nn.Module) -> tuple[dict, dict, dict]:
    """(int8 matrices, their per-output-channel scales [O, 1, ...], fp16 rest) of a float
    model, keyed like `pack_model`'s payload."""
    integers, scales, state = {}, {}, {}
    for key, value in model.state_dict().items():
        name = key.removesuffix(".weight")
        if key.endswith(".weight") and value.dim() >= 2:
            peak = value.abs().amax(dim=tuple(range(1, value.dim())), keepdim=True)  # [O, 1..]
            scales[name] = peak.clamp(min=1e-12) / 127
            integers[name] = torch.round(value / scales[name]).to(torch.int8)
        else:
            state[key] = value.half() if value.is_floating_point() else value
    return integers, scales, state
