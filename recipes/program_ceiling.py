"""The ceiling that numpy's random draws put on programming: `mho bench sim`'s layer (512 x 512,
8-bit weights: 3.67 M cells), its draws alone (per chunk of cells, the same streams and
shapes as `device._Cells`: 12 normals and a uniform per cell) against the whole of
`program_chip`, on T threads, timed in turns; prints medians in ms and as cells per second.
A seed's chip depends on these draws, so they stay whatever else gets faster: the draws'
rate is what programming could reach if everything else were free.

    OPENBLAS_NUM_THREADS=1 python recipes/program_ceiling.py 1,2 5
"""

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from mho.simulator.device import CELLS_PER_CHUNK, DeviceConfig, load_device_params, program_chip
from mho.timing import interleaved_medians_ms

threads, repeats = [int(t) for t in sys.argv[1].split(",")], int(sys.argv[2])
torch.set_num_threads(1)
weight = torch.randint(-127, 128, (512, 512), generator=torch.Generator().manual_seed(0)).numpy()
cells = 7 * 2 * 512 * 512  # planes x polarities x cells per plane
chunks = -(-cells // CELLS_PER_CHUNK)
features = load_device_params().features
streams = np.random.SeedSequence(0).spawn(1 + chunks)[1:]  # one per chunk, as programming


def draw(chunk: int) -> None:
    rng = np.random.default_rng(streams[chunk])
    count = min(CELLS_PER_CHUNK, cells - chunk * CELLS_PER_CHUNK)
    rng.standard_normal((features, count))  # the VAR noise
    rng.random(count)  # the mixture component's uniform
    rng.standard_normal((2 * features, count))  # the device-to-device normals


def draws(count: int):
    def run() -> None:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(draw, range(chunks)))
    return run


program_chip(weight[:1, :1], 8, DeviceConfig(), seed=0)  # compiles (or loads) the numba pass
runs = {}
for count in threads:
    runs[f"draws alone, {count} thread(s)"] = draws(count)
    runs[f"program_chip, {count} thread(s)"] = (
        lambda count=count: program_chip(weight, 8, DeviceConfig(), seed=0, threads=count))
for name, ms in interleaved_medians_ms(runs, repeats).items():
    print(f"{name:28s} {ms:7.0f} ms {cells / ms / 1e3:6.2f} M cells/s")
