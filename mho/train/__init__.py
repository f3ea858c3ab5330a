"""Training: length-bucketed batches, SpecAugment, schedules and the resumable loop."""

from mho.train.config import TrainConfig, load_train_config
from mho.train.trainer import Trainer, training_device

__all__ = ["TrainConfig", "Trainer", "load_train_config", "training_device"]
