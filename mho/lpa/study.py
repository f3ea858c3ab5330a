"""The LPA study as library calls (`mho lpa sweep`, `mho lpa convert`, `mho lpa report`): load
the teacher (wav2vec2-style or Conformer, see host.py), split the data, run the diagnostic
or the conversion, collect model cards."""

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mho.errors import MhoError
from mho.lpa.convert import ConversionConfig, ConversionState, Converter
from mho.lpa.diagnostic import diagnose, mse_order
from mho.lpa.fitting import FitConfig
from mho.lpa.host import host_of
from mho.lpa.report import plot_sweep

HELD_OUT_EVERY = 10  # every 10th utterance of the data scores the diagnostic's fits


def fit_config(steps: int = 300, batch_seconds: float = 160.0,
               lpa_settings: Sequence[str] = (), seed: int = 0) -> FitConfig:
    """A FitConfig with PulseAccumulator settings given as TOML "KEY=VALUE" lines."""
    import tomllib

    try:
        settings = tomllib.loads("\n".join(lpa_settings))
    except tomllib.TOMLDecodeError as error:
        raise MhoError(f"bad --lpa value ({error})") from None
    return FitConfig(steps=steps, max_batch_seconds=batch_seconds, seed=seed, lpa=settings)


def load_teacher(model: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The wav2vec2-style model or Conformer ``model`` names (shipped, checkpoint or Hugging
    Face folder)."""
    from mho.models.zoo import checkpoint_path, load_model

    path = checkpoint_path(model)
    if path is None:
        raise MhoError(f"unknown model {model!r}: give a shipped name, a checkpoint path or "
                       f"a Hugging Face model folder")
    teacher, payload = load_model(path)
    try:
        host_of(teacher)
    except MhoError as error:
        raise MhoError(f"{model}: {error}") from None
    return teacher, payload


def run_sweep(model: str, data_path: Path, out: Path, config: FitConfig,
              device: torch.device, *,
              progress: Callable[[int, int], None] = lambda layer, step: None) -> dict:
    """The MSE diagnostic: fit an LPA to each layer's attention on the data (every
    HELD_OUT_EVERY-th utterance held out to score it), rank the layers; writes
    ``out/sweep.json`` and ``out/sweep.png`` and returns the report."""
    teacher, _ = load_teacher(model)
    data = host_of(teacher).load_data(data_path)
    ids = [u.id for u in data.utterances]
    held_out_ids = set(ids[::HELD_OUT_EVERY])
    fits = diagnose(teacher, data.select(set(ids) - held_out_ids), data.select(held_out_ids),
                    config, device, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": model, "config": dataclasses.asdict(config),
              "layers": [dataclasses.asdict(f) for f in fits], "mse_order": mse_order(fits)}
    (out / "sweep.json").write_text(json.dumps(report, indent=2))
    plot_sweep(fits, out / "sweep.png", title=f"LPA fit per layer: {model}")
    return report


def layer_order(spec: str, order: str, ranking: Path | None, num_layers: int,
                already: Sequence[int] = ()) -> list[int]:
    """The layers to convert, in order: ``spec`` "N" takes the first N of ``order`` ("mse":
    the ranking file's order; "naive": first to last), or it lists indices "3,1,4"."""
    if "," in spec or not spec.isdigit():
        try:
            layers = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise MhoError(f"--layers takes N or a comma list of indices, got {spec!r}") from None
    elif order == "mse":
        if ranking is None:
            raise MhoError("--order mse needs --ranking sweep.json (run `mho lpa sweep`)")
        layers = json.loads(Path(ranking).read_text())["mse_order"][: int(spec)]
    elif order == "naive":
        layers = list(range(num_layers))[: int(spec)]
    else:
        raise MhoError(f"unknown order {order!r}: mse or naive")
    if not layers or len(set(layers)) != len(layers) or \
            any(not 0 <= i < num_layers for i in layers):
        raise MhoError(f"--layers must name distinct layers in 0..{num_layers - 1}")
    if set(layers) & set(already):
        raise MhoError(f"layers {sorted(set(layers) & set(already))} are already LPA layers")
    return layers


def run_conversion(model: str, layers: str, data_path: Path, out: Path,
                   config: ConversionConfig, device: torch.device, *, order: str = "mse",
                   ranking: Path | None = None, resume: bool = False,
                   log: Callable[[str], None] = lambda message: None,
                   progress: Callable[[str, int, int], None] = lambda stage, step, total: None,
                   ) -> ConversionState:
    """Replace the attention of the chosen layers of ``model`` by LPAs one at a time (fit,
    co-adaptation, CTC fine-tuning), checkpointing each depth under ``out``."""
    from mho.data.lexicon import PHONE_VOCABULARY

    teacher, payload = load_teacher(model)
    if config.finetune_steps and list(payload["vocabulary"]) != list(PHONE_VOCABULARY.tokens):
        raise MhoError(f"{model} outputs another vocabulary than mho's phones (a Hugging Face "
                       "character model?): CTC fine-tuning needs phone targets; pass "
                       "--finetune-steps 0 to convert with fitting and co-adaptation only")
    host = host_of(teacher)
    chosen = layer_order(layers, order, ranking, host.num_layers(teacher),
                         teacher.config.lpa_layers)
    # the order's name goes into every depth's metadata (and `mho models pack`'s card): the
    # first MSE-ranked layers can be 0, 1, ..., which the layers alone would call naive
    kind = order if "," not in layers and layers.isdigit() else "list"
    payload = {**payload, "metadata": {**payload.get("metadata", {}), "lpa_order_kind": kind}}
    converter = Converter(payload, teacher, chosen, host.load_data(data_path), config, out,
                          device, log=log, progress=progress)
    return converter.run(resume=resume)


def model_cards(models: Sequence[str]) -> list[dict]:
    """The cards of shipped models, or of packed checkpoints with their .json beside them."""
    from mho.models.zoo import model_card, shipped_models

    cards = []
    for model in models:
        card_path = Path(model).with_suffix(".json")
        if model in shipped_models():
            cards.append(model_card(model))
        elif card_path.is_file():
            cards.append(json.loads(card_path.read_text()))
        else:
            raise MhoError(f"no model card for {model} (pack it with `mho models pack`)")
    return cards
