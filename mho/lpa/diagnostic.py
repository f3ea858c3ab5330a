"""The MSE diagnostic: how well can an LPA stand in for each layer's attention?

Each layer is tried alone, on the teacher's own activations: a fresh PulseAccumulator
(value and output projections copied from the attention: selective initialization) is
fitted for `steps` to the attention's output, then scored in hard mode on held-out
batches by relative MSE (squared error over squared target, valid frames only). Layers
are ranked easiest (lowest MSE) first: the order `mho lpa convert --order mse` replaces
them in.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mho.lpa.fitting import (
    FitConfig,
    batch_stream,
    fit_loss,
    module_inputs,
    new_lpa,
    set_temperature,
    warmup_constant,
)
from mho.lpa.host import host_of


@dataclass(frozen=True)
class LayerFit:
    layer: int
    mse: float  # relative MSE in hard mode on held-out batches
    soft_mse: float  # the same with the final soft gates (training mode, no dropout)
    seconds: float


def fit_lpa(model: nn.Module, layer: int, train, config: FitConfig,
            device: torch.device, *, progress: Callable[[int], None] = lambda step: None
            ) -> nn.Module:
    """An LPA fitted to layer `layer`'s attention (model unchanged); `train`: a
    WaveformSet or FeatureSet, as the host reads."""
    host = host_of(model)
    attention = host.attention(model, layer)
    lpa = new_lpa(model, layer, config, device)
    optimizer = torch.optim.AdamW(lpa.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = warmup_constant(optimizer, config.steps)
    batches = batch_stream(train, config, stream=layer)
    model.eval()
    host.train_for_fit(lpa)
    for step in range(config.steps):
        loss = fit_loss(model, attention, lpa, next(batches), step, config, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress(step)
    return lpa


@torch.no_grad()
def score_lpa(model: nn.Module, layer: int, lpa: nn.Module, held_out, config: FitConfig,
              device: torch.device, *, batches: int = 4) -> tuple[float, float]:
    """(hard, soft) relative MSE of `lpa` against layer `layer`'s attention."""
    host = host_of(model)
    attention = host.attention(model, layer)
    stream = batch_stream(held_out, config, stream=10_000)
    totals = {True: [0.0, 0.0], False: [0.0, 0.0]}
    for _ in range(min(batches, max(1, len(held_out) // 4))):
        x, mask = module_inputs(model, attention, next(stream), device)
        target = attention(x, mask)
        weight = mask[..., None].float()
        for hard in (True, False):
            host.train_for_fit(lpa, not hard)
            error = ((lpa(x, mask) - target) ** 2 * weight).sum().item()
            totals[hard][0] += error
            totals[hard][1] += (target**2 * weight).sum().item()
    lpa.eval()
    return totals[True][0] / totals[True][1], totals[False][0] / totals[False][1]


def diagnose(model: nn.Module, train, held_out, config: FitConfig,
             device: torch.device, *, layers: list[int] | None = None,
             progress: Callable[[int, int], None] = lambda layer, step: None) -> list[LayerFit]:
    """LayerFit for every layer (or `layers`), in layer order."""
    import time

    model = model.to(device).eval()
    # LPA dropout off while fitting: the diagnostic measures fit, not regularization.
    config = FitConfig(**{**asdict(config), "lpa": {**config.lpa, "dropout": 0.0}})
    results = []
    for layer in layers if layers is not None else range(host_of(model).num_layers(model)):
        started = time.perf_counter()
        lpa = fit_lpa(model, layer, train, config, device,
                      progress=lambda step, layer=layer: progress(layer, step))
        set_temperature(lpa, config.temperature_end)
        hard, soft = score_lpa(model, layer, lpa, held_out, config, device)
        results.append(LayerFit(layer, hard, soft, time.perf_counter() - started))
    return results


def mse_order(fits: list[LayerFit]) -> list[int]:
    """Layers easiest first (ties: earlier layer first)."""
    return [f.layer for f in sorted(fits, key=lambda f: (f.mse, f.layer))]
