"""Progressive conversion: replace attention layers by LPAs one at a time, easiest first.

For each layer of the order, three stages (each seeded, checkpointed when it ends):

1. fit: a PulseAccumulator, initialized from the attention's value and output projections
   (selective initialization), learns the attention's output on the current model's own
   activations, under the temperature curriculum (soft -> near-binary gates);
2. co-adapt: the LPA goes in; the LPA and that layer's FF (and its norms) learn to
   reproduce the layer's output from before the swap, so the FF absorbs what the LPA
   cannot express (FFN co-adaptation);
3. fine-tune: the whole model trains on CTC for a few hundred steps at a low LR, at the
   final temperature.

After each layer, the model so far is written as ``depth-<k>.pt`` (a normal checkpoint:
`mho eval` runs it). ``state.pt`` holds where the run is; ``--resume`` continues from the
last finished stage, and Ctrl-C writes the stage in progress (optimizer included) first.
"""

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mho.data.lexicon import PHONE_VOCABULARY
from mho.errors import MhoError
from mho.lpa.fitting import (
    FitConfig,
    batch_stream,
    fit_loss,
    masked_relative_mse,
    module_inputs,
    new_lpa,
    set_temperature,
    warmup_constant,
)
from mho.lpa.host import host_of
from mho.models.checkpoint import load_checkpoint, save_checkpoint
from mho.train.trainer import StopRequest

STATE = "state.pt"
STAGES = ("fit", "coadapt", "finetune")


@dataclass(frozen=True)
class ConversionConfig:
    fit: FitConfig = field(default_factory=FitConfig)  # stage 1 (and the LPA's settings)
    coadapt_steps: int = 200
    coadapt_lr: float = 5e-4
    finetune_steps: int = 400
    finetune_lr: float = 1e-4
    weight_decay: float = 1e-2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ConversionState:
    order: list[int]  # layers to replace, in this order
    done: int = 0  # layers of `order` fully converted
    stage: int = 0  # index into STAGES of the layer in progress
    step: int = 0  # steps done within that stage
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


class Converter:
    """Runs (and resumes) one progressive conversion into `out_dir`."""

    def __init__(self, teacher_payload: dict, teacher: nn.Module, order: list[int],
                 train, config: ConversionConfig, out_dir: Path,
                 device: torch.device, *, log: Callable[[str], None] = lambda m: None,
                 progress: Callable[[str, int, int], None] = lambda stage, step, total: None):
        self.payload, self.config, self.out_dir = teacher_payload, config, Path(out_dir)
        self.train, self.device, self.log, self.progress = train, device, log, progress
        self.host = host_of(teacher)  # wav2vec2-style or Conformer; `train` is its data
        # the teacher's own attention modules, kept before any is replaced: co-adaptation
        # targets are the teacher's layer outputs
        self.teacher_attention = {i: copy.deepcopy(layer.attention).cpu()
                                  for i, layer in enumerate(self.host.layers(teacher))}
        self.model = teacher.to(device)
        self.state = ConversionState(order=list(order))
        self.optimizer_state: dict | None = None

    # ---- persistence ---------------------------------------------------------------------

    def _model_payload(self, metadata: dict) -> dict:
        return {
            "model_type": self.host.model_type,
            "model_config": self.model.config.to_dict(),
            "vocabulary": self.payload["vocabulary"],
            "state_dict": self.model.state_dict(),
            "metadata": {**self.payload.get("metadata", {}), **metadata},
        }

    def save_state(self) -> None:
        lpa = getattr(self, "_lpa", None)  # a fit in progress
        save_checkpoint(self.out_dir / STATE, {
            **self._model_payload({}),
            "conversion": {"config": self.config.to_dict(), **asdict(self.state),
                           "optimizer": self.optimizer_state,
                           "lpa": lpa.state_dict() if lpa is not None else None},
        })

    def resume(self) -> bool:
        path = self.out_dir / STATE
        if not path.is_file():
            return False
        stored = load_checkpoint(path, model_type=self.host.model_type)
        conversion = stored["conversion"]
        if conversion["config"] != self.config.to_dict() or \
                conversion["order"] != self.state.order:
            raise MhoError(f"{path} is a conversion with other settings or order; "
                           "use a new output folder")
        from mho.models.zoo import build_model

        self.model = build_model(stored).to(self.device)
        self.model.load_state_dict(stored["state_dict"])
        self.optimizer_state = conversion["optimizer"]
        if conversion["lpa"] is not None:
            self._lpa = new_lpa(self.model, self.state.order[conversion["done"]],
                                self.config.fit, self.device)
            self._lpa.load_state_dict(conversion["lpa"])
        self.state = ConversionState(**{k: conversion[k] for k in
                                        ("order", "done", "stage", "step", "seconds",
                                         "history")})
        return True

    # ---- stages --------------------------------------------------------------------------

    def run(self, *, resume: bool = False) -> ConversionState:
        if not resume and (self.out_dir / STATE).exists():
            raise MhoError(f"{self.out_dir} already holds a conversion: pass --resume or "
                           "another -o")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.resume():
            self.log(f"resumed: {self.state.done} layers done, stage "
                     f"{STAGES[self.state.stage]} at step {self.state.step}")
        with StopRequest() as stop:
            while self.state.done < len(self.state.order):
                layer = self.state.order[self.state.done]
                while self.state.stage < len(STAGES):
                    started = time.perf_counter()
                    finished = getattr(self, f"_{STAGES[self.state.stage]}")(layer, stop)
                    self.state.seconds += time.perf_counter() - started
                    if not finished:
                        self.save_state()
                        raise KeyboardInterrupt
                    self.state.stage, self.state.step, self.optimizer_state = \
                        self.state.stage + 1, 0, None
                    self.save_state()
                self.state.done, self.state.stage = self.state.done + 1, 0
                self._write_depth()
                self.save_state()
        return self.state

    def _loop(self, stage: str, steps: int, parameters, lr: float, stop, loss_fn) -> bool:
        """Steps `state.step`..`steps` of one stage; False if stopped by Ctrl-C."""
        parameters = list(parameters)
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=self.config.weight_decay)
        scheduler = warmup_constant(optimizer, steps)
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state["optimizer"])
            scheduler.load_state_dict(self.optimizer_state["scheduler"])
        stream_id = (self.state.done * len(STAGES) + self.state.stage) * 7 + 1
        batches = batch_stream(self.train, self.config.fit, stream=stream_id)
        for _ in range(self.state.step):  # skip the batches a resumed stage already used
            next(batches)
        loss = float("nan")
        for step in range(self.state.step, steps):
            if stop.requested:
                self.optimizer_state = {"optimizer": optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict()}
                return False
            torch.manual_seed(self.config.fit.seed * 1_000_003 + stream_id * 10_007 + step)
            loss_value = loss_fn(next(batches), step)
            optimizer.zero_grad(set_to_none=True)
            loss_value.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            scheduler.step()
            loss = loss_value.item()
            self.state.step = step + 1
            self.progress(stage, step + 1, steps)
        self.state.history.append({"layer": self.state.order[self.state.done], "stage": stage,
                                   "final_loss": loss})
        return True

    def _fit(self, layer: int, stop) -> bool:
        attention = self.host.attention(self.model, layer)
        if not hasattr(self, "_lpa"):  # else resumed mid-fit: the LPA came with the state
            self._lpa = new_lpa(self.model, layer, self.config.fit, self.device)
        self.model.eval()
        self.host.train_for_fit(self._lpa)

        def loss_fn(batch, step):
            return fit_loss(self.model, attention, self._lpa, batch, step, self.config.fit,
                            self.device)

        finished = self._loop("fit", self.config.fit.steps, self._lpa.parameters(),
                              self.config.fit.lr, stop, loss_fn)
        if finished:  # swap in: the model now carries the LPA (config and module)
            self._install(layer, self._lpa)
            del self._lpa
        return finished

    def _install(self, layer: int, lpa: nn.Module) -> None:
        self.host.install(self.model, layer, lpa, self.config.fit.lpa)
        set_temperature(self.model, self.config.fit.temperature_end)

    def _coadapt(self, layer: int, stop) -> bool:
        # LPA in; restore attention
        target_layer = copy.deepcopy(self.host.layers(self.model)[layer])
        target_layer.attention = self._teacher_attention(layer)
        block = self.host.layers(self.model)[layer]
        self.model.eval()
        block.train()

        def loss_fn(batch, step):
            x, mask = module_inputs(self.model, block, batch, self.device)
            with torch.no_grad():
                target = target_layer(x, mask)
            return masked_relative_mse(block(x, mask), target, mask)

        return self._loop("coadapt", self.config.coadapt_steps, block.parameters(),
                          self.config.coadapt_lr, stop, loss_fn)

    def _teacher_attention(self, layer: int):
        return copy.deepcopy(self.teacher_attention[layer]).to(self.device).eval()

    def _finetune(self, layer: int, stop) -> bool:
        self.model.train()

        def loss_fn(batch, step):
            log_probs, frames = self.model(batch["inputs"].to(self.device),
                                           batch["lengths"].to(self.device))
            return torch.nn.functional.ctc_loss(
                log_probs.transpose(0, 1), batch["labels"].to(self.device), frames,
                batch["label_lengths"].to(self.device), blank=PHONE_VOCABULARY.blank_id,
                zero_infinity=True)

        finished = self._loop("finetune", self.config.finetune_steps, self.model.parameters(),
                              self.config.finetune_lr, stop, loss_fn)
        self.model.eval()
        return finished

    def _write_depth(self) -> None:
        depth = self.state.done
        save_checkpoint(self.out_dir / f"depth-{depth}.pt", self._model_payload({
            "lpa_order": self.state.order[:depth],
            "conversion_seconds": self.state.seconds,
        }))
        self.log(f"depth {depth}: layers {self.state.order[:depth]} replaced "
                 f"({self.state.seconds:.0f} s so far)")
