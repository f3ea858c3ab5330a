"""Training configuration: one typed dataclass, read from TOML; named presets ship with mho."""

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mho.config import load_toml
from mho.data.augment import AugmentConfig
from mho.errors import ConfigError
from mho.train.distill import DistillConfig
from mho.train.specaugment import SpecAugmentConfig


@dataclass(frozen=True)
class DataConfig:
    train: Path = Path("data/corpus/train.jsonl")
    dev: Path = Path("data/corpus/dev.jsonl")
    max_train_hours: float | None = None  # a seeded random subset of the train set
    max_dev_utterances: int = 300  # dev WER after each epoch is on the first N utterances

    def __post_init__(self) -> None:
        if self.max_train_hours is not None and self.max_train_hours <= 0:
            raise ConfigError(f"data.max_train_hours must be positive, got {self.max_train_hours}")
        if self.max_dev_utterances < 1:
            raise ConfigError("data.max_dev_utterances must be at least 1")


FAMILIES = ("conformer", "wav2vec2")


@dataclass(frozen=True)
class TrainConfig:
    family: str = "conformer"  # "conformer" (log-mel input) or "wav2vec2" (waveform input)
    size: str = "small"  # the family's size preset (SIZE_PRESETS in its model module)
    pe: str = "sinusoidal+linear"  # positional encoding variant
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the size preset
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 10
    dev_every: int = 1  # dev WER every N epochs and after the last (checkpoints: every epoch)
    max_batch_seconds: float = 240.0  # padded audio per batch (batch size x longest)
    max_batch_size: int = 64
    peak_lr: float = 1e-3
    warmup_fraction: float = 0.1  # of all steps; then linear decay to 1% of the peak
    weight_decay: float = 1e-2  # decoupled (AdamW-style) in RAdam
    grad_clip: float = 5.0  # max global gradient norm
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    # waveform augmentation of the train set (conformer): new speakers and rooms per batch
    augment: AugmentConfig | None = None
    weight_bits: int | None = None  # None: float training; 8 or 4: QAT (8-bit activations)
    init: Path | None = None  # start from this checkpoint's weights (QAT fine-tuning)
    # a Conformer teacher's frame posteriors as extra targets (mho/train/distill.py)
    distill: DistillConfig | None = None
    normalize_features: bool = True  # conformer: the model's feature mean/std from the train set
    seed: int = 0
    threads: int = 2  # torch intra-op threads
    device: str = "cpu"  # "cpu", "cuda" or "auto" (cuda when available)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if self.family == "wav2vec2" and self.weight_bits is not None:
            raise ConfigError("QAT (weight_bits) is for the conformer family only")
        if self.augment is not None and self.family != "conformer":
            raise ConfigError("augment is for the conformer family only")
        if self.weight_bits is not None and self.weight_bits not in (4, 8):
            raise ConfigError(f"weight_bits must be 4 or 8 (or unset), got {self.weight_bits}")
        if min(self.epochs, self.dev_every, self.max_batch_size) < 1 or self.max_batch_seconds <= 0:
            raise ConfigError(
                "epochs, dev_every, max_batch_size and max_batch_seconds must be positive")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device must be cpu, cuda or auto, got {self.device!r}")

    def build_model(self, vocab_size: int):
        from mho.models.conformer import ConformerCTC, conformer_config
        from mho.models.transformer import Wav2Vec2CTC, wav2vec2_config

        try:
            if self.family == "wav2vec2":
                return Wav2Vec2CTC(wav2vec2_config(self.size, vocab_size=vocab_size,
                                                   **self.model))
            config = conformer_config(self.size, pe=self.pe, vocab_size=vocab_size, **self.model)
        except TypeError as error:
            raise ConfigError(f"model overrides: {error}") from None
        return ConformerCTC(config)


PRESET_DIR = Path(str(resources.files("mho") / "assets" / "presets"))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_train_config(name_or_path: str) -> TrainConfig:
    """A preset name (``mho/assets/presets/<name>.toml``) or a TOML file path."""
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path not in preset_names():
            raise ConfigError(
                f"no config file or preset {name_or_path!r}; presets: {', '.join(preset_names())}"
            )
        path = PRESET_DIR / f"{name_or_path}.toml"
    return load_toml(TrainConfig, path)


def apply_overrides(config: TrainConfig, overrides: tuple[str, ...] | list[str]) -> TrainConfig:
    """``key=value`` pairs in TOML syntax (dotted keys for nested tables) over a config."""
    import tomllib

    from mho.config import from_dict, to_dict

    if not overrides:
        return config
    try:
        patch = tomllib.loads("\n".join(overrides))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"bad --set value ({error}); quote strings: pe='\"none\"'") from None

    def merge(base: dict, update: dict) -> dict:
        for key, value in update.items():
            nested = isinstance(value, dict)
            if nested and not isinstance(base.get(key, {}), dict | None):
                raise ConfigError(f"--set {key}.…: {key} is not a table")
            base[key] = merge(dict(base.get(key) or {}), value) if nested else value
        return base

    return from_dict(TrainConfig, merge(to_dict(config), patch))
