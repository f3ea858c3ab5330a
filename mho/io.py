"""File I/O the layers share: atomic writes (a crash, Ctrl-C or full disk never leaves a
half-written file) and format-tagged torch files that load without executing code."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mho.errors import MhoError


def check_writable(path: str | Path) -> None:
    """MhoError unless a file can be written at ``path`` (its folder is created if missing):
    checked before long work, so that an export does not fail after a minute of tracing."""
    path = Path(path)
    if path.is_dir():
        raise MhoError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f"{path.name}.{os.getpid()}.probe")
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise MhoError(f"cannot write {path}: {error.strerror or error}") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step,
    on failure it is removed. The temporary name includes the process id, so parallel
    writers of the same file never clash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


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
