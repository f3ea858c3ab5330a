"""Models by name: the shipped checkpoints in ``mho/assets/models`` or a checkpoint path."""

from importlib import resources
from pathlib import Path

import torch

from mho.errors import MhoError
from mho.train.checkpoint import load_checkpoint

MODEL_DIR = Path(str(resources.files("mho") / "assets" / "models"))


def shipped_models() -> list[str]:
    return sorted(p.stem for p in MODEL_DIR.glob("*.pt"))


def checkpoint_path(spec: str) -> Path | None:
    """The checkpoint file ``spec`` names (shipped name or path), or None if it names none."""
    if spec in shipped_models():
        return MODEL_DIR / f"{spec}.pt"
    path = Path(spec)
    return path if path.suffix == ".pt" or path.is_file() else None


def load_model(path: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from its checkpoint, in eval mode; returns (model, checkpoint)."""
    from mho.models.conformer import ConformerCTC, ConformerCTCConfig

    payload = load_checkpoint(path)
    if payload.get("model_type") != "conformer-ctc":
        raise MhoError(f"{path}: unsupported model type {payload.get('model_type')!r}")
    model = ConformerCTC(ConformerCTCConfig(**payload["model_config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    model.load_state_dict(state)
    return model.eval(), payload
