"""Timing spread of torch and the crossbar simulator on T threads, for comparing OpenMP wait
policies and numba threading layers (each is fixed when its library loads, so one setting per
process):

    NUMBA_THREADING_LAYER=omp python recipes/thread_spread.py layer 2 7
    NUMBA_THREADING_LAYER=workqueue python recipes/thread_spread.py layer 2 7
    OMP_WAIT_POLICY=PASSIVE NUMBA_THREADING_LAYER=omp python recipes/thread_spread.py layer 2 7
    [OMP_WAIT_POLICY=PASSIVE] python recipes/thread_spread.py torch 2 15

`layer`: `mho bench sim`'s layer (512 x 512, 8-bit weights, 6400 rows, ADC 4/4), the digital
matmul and the forward without and with read noise, timed in turns; `torch`: 200 small
matmuls (64 x 256 x 256, then tanh) and one 6400 x 512 x 512 matmul. Prints medians and
min-max in ms.
"""

import os
import sys
import time

import numpy as np
import torch

what, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)


def layer_runs() -> dict:
    import numba  # noqa: F401 (loaded before the layer: its threading layer is reported)

    from mho.simulator.crossbar import CrossbarConfig, CrossbarLinear
    from mho.simulator.device import DeviceConfig, program_chip

    generator = torch.Generator().manual_seed(0)
    weight = torch.randint(-127, 128, (512, 512), generator=generator)
    x = torch.randn(6400, 512, generator=generator)
    chip = program_chip(weight.numpy(), 8, DeviceConfig(), seed=0)
    layers = {mode: CrossbarLinear(chip, 0.01, float(x.abs().max()) / 127, None,
                                   CrossbarConfig(noise=mode)) for mode in ("off", "legacy")}
    float_weight = weight.float() * 0.01
    return {"digital": lambda: torch.nn.functional.linear(x, float_weight),
            "noise off": lambda: layers["off"](x), "noise on": lambda: layers["legacy"](x)}


def torch_runs() -> dict:
    x, w = torch.randn(64, 256), torch.randn(256, 256)

    def small():
        y = x
        for _ in range(200):
            y = torch.tanh(y @ w * 0.05)

    return {"200 small matmul+tanh": small,
            "6400x512x512 matmul": lambda: torch.randn(6400, 512) @ torch.randn(512, 512)}


runs = layer_runs() if what == "layer" else torch_runs()
times = {name: [] for name in runs}
with torch.inference_mode():
    for run in runs.values() if what == "layer" else ():  # warm-up (numba compiles)
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1e3)
setting = f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
if what == "layer":
    import numba

    setting += f", numba layer {numba.threading_layer()}"
print(f"{setting}, {threads} threads, load {os.getloadavg()[0]:.1f}:",
      "; ".join(f"{name} {np.median(v):.0f} ({min(v):.0f}-{max(v):.0f}) ms"
                for name, v in times.items()))
