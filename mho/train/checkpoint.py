"""Checkpoints: model config, vocabulary, weights, metadata and (optionally) training state.

Everything is plain tensors, numbers, strings, lists and dicts, so loading works with
``torch.load(weights_only=True)``: a checkpoint can never execute code.
"""

from pathlib import Path
from typing import Any

import torch

from mho.errors import MhoError
from mho.io import atomic_path

FORMAT = "mho-checkpoint-1"


def save_tagged(path: str | Path, tag: str, payload: dict[str, Any]) -> None:
    """``torch.save`` of ``payload`` marked with the format ``tag``, atomically: a crash or
    Ctrl-C mid-write leaves the previous file intact."""
    with atomic_path(path) as partial:
        torch.save({"format": tag, **payload}, partial)


def load_tagged(path: str | Path, tag: str, what: str, hint: str = "") -> dict[str, Any]:
    """Read a file ``save_tagged`` wrote with ``tag`` safely (``weights_only``); ``what``
    names it in errors ("checkpoint"), ``hint`` says where such files come from."""
    path = Path(path)
    if not path.is_file():
        raise MhoError(f"{what} not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and zip errors have many types
        raise MhoError(f"cannot read {what} {path}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != tag:
        raise MhoError(f"{path} is not an mho {what}{hint}")
    return payload


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
