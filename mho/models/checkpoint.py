"""Checkpoints: model config, vocabulary, weights, metadata and (optionally) training state.

Everything is plain tensors, numbers, strings, lists and dicts, so loading works with
``torch.load(weights_only=True)``: a checkpoint can never execute code.
"""

from pathlib import Path
from typing import Any

from mho.errors import MhoError
from mho.io import load_tagged, save_tagged

FORMAT = "mho-checkpoint-1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    save_tagged(path, FORMAT, payload)


def load_checkpoint(path: str | Path, *, model_type: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; with ``model_type``, refuse one made for another model."""
    payload = load_tagged(path, FORMAT, "checkpoint")
    if model_type is not None and payload.get("model_type") != model_type:
        raise MhoError(
            f"{path} holds a {payload.get('model_type')!r} model, expected {model_type!r}"
        )
    return payload
