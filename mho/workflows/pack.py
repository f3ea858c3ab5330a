"""`mho models pack`: a trained checkpoint packed compactly as a shipped model, with a model
card scored on the packed weights (what users get is what was scored)."""

import json
from collections.abc import Sequence
from pathlib import Path

from mho.data.datasets import resolve_dataset
from mho.decoding.decoders import load_decoder
from mho.exporter.onnx import speech_metadata
from mho.io import atomic_path
from mho.models.zoo import (
    MODEL_DIR,
    conversion_record,
    load_model,
    pack_model,
    training_summary,
)
from mho.runtime.speech import Recognizer, SpeechSession
from mho.workflows.evaluate import evaluate


def pack_and_score(
    checkpoint: Path, name: str, eval_data: Sequence[str] = (), *,
    out_dir: Path | None = None, progress: bool = False,
) -> tuple[dict, Path]:
    """Write ``<out_dir>/<name>.pt`` (default: the shipped models' folder) and its card
    ``<name>.json`` scored greedy and with the LM on each of ``eval_data``; returns the card
    and the model's path. Sets are resolved before any work. ``checkpoint`` may be the
    packed model itself: its file and card are kept, the card's scores replaced."""
    sets = [resolve_dataset(spec) for spec in eval_data]
    out_dir = out_dir or MODEL_DIR
    model, payload = load_model(checkpoint)
    target = out_dir / f"{name}.pt"
    card_path = target.with_suffix(".json")
    if target.exists() and checkpoint.resolve() == target.resolve():
        # Re-scoring a packed model in place: a re-pack would write the same tensors into a
        # new file (other zip bytes), so the file is kept, and so is its card but for the
        # scores: the packed file lacks some of what the card was made from (an LPA model
        # trained on after conversion: its conversion record).
        card = (json.loads(card_path.read_text()) if card_path.exists()
                else _card(model, payload, name))
        card["results"] = _score(model, payload, name, sets, progress)
        card["bytes"] = target.stat().st_size
        _write_card(card, card_path)
        return card, target
    card = _card(model, payload, name)
    with atomic_path(target) as packed_path:
        pack_model(model, payload, packed_path)
        packed, packed_payload = load_model(packed_path)
        card["results"] = _score(packed, packed_payload, name, sets, progress)
        card["bytes"] = packed_path.stat().st_size
        _write_card(card, card_path)
    return card, target


def _card(model, payload: dict, name: str) -> dict:
    """A card's description of ``model`` from its checkpoint ``payload`` (no scores)."""
    quant = getattr(model.config, "quant", None)
    card = {
        "name": name,
        "family": payload["model_type"],
        "pe": getattr(model.config, "pe", "conv"),  # wav2vec2: its conv positional embedding
        "weight_bits": quant.weight_bits if quant else None,
        "params": model.num_parameters(),
        "architecture": payload["model_config"],
        **training_summary(payload),
    }
    if hasattr(model.config, "lpa_layers"):  # LPA hosts: which layers hold an LPA
        card["lpa_layers"] = list(model.config.lpa_layers)
        conversion = conversion_record(payload)
        card["lpa_order"] = conversion.get("lpa_order", [])  # as converted
        if "lpa_order_kind" in conversion:  # mse, naive or list (`mho lpa convert`)
            card["lpa_order_kind"] = conversion["lpa_order_kind"]
        if "conversion_seconds" in conversion:
            card["conversion_minutes"] = conversion["conversion_seconds"] / 60
    return card


def _score(model, payload: dict, name: str, sets: Sequence, progress: bool) -> list[dict]:
    """Greedy and LM results of a packed ``model`` on each of ``sets``."""
    metadata = speech_metadata(model, name=name, vocabulary=payload["vocabulary"],
                               model_type=payload["model_type"])
    session = SpeechSession.from_model(model, metadata)
    recognizers = [Recognizer(name, session, load_decoder(kind, tokens=metadata.vocabulary),
                              kind) for kind in ("greedy", "lm")] if sets else []
    return [
        evaluate(recognizer, utterances, data_name=data_name, progress=progress).summary()
        for data_name, utterances in sets
        for recognizer in recognizers
    ]


def _write_card(card: dict, card_path: Path) -> None:
    with atomic_path(card_path) as partial:
        partial.write_text(json.dumps(card, indent=2) + "\n")
