"""Where the simulator's forward goes: the pieces of `mho bench sim`'s layer (512 x 512, 8-bit
weights, 6400 rows, ADC 4/4, legacy noise), each summed over the forward's chunks, one thread,
medians; printed as ms and as multiples of the bit-plane floor (7 x the digital matmul).
The noisy fused pass draws its own normals: its line includes them; the two lines of
normal draws time torch's generator (what the pass replaced) and the pass's own generator
alone, for as many draws.

    OPENBLAS_NUM_THREADS=1 python recipes/sim_pieces.py
"""

import numba
import numpy as np
import torch

from mho.simulator import gaussian, kernels
from mho.simulator.crossbar import (
    CHUNK_ELEMENTS,
    CrossbarConfig,
    CrossbarLinear,
    variance_dtype,
)
from mho.timing import median_ms
from mho.workflows.bench.sim import WEIGHT_SCALE, bench_layer_inputs

torch.set_num_threads(1)
numba.set_num_threads(1)
weight, x, scale = bench_layer_inputs()  # `mho bench sim`'s layer: [O, I], [N, I]
noisy = CrossbarLinear.from_integer(weight, 8, WEIGHT_SCALE, scale,
                                    config=CrossbarConfig(noise="legacy"), seed=0)
quiet = CrossbarLinear(noisy.chip, WEIGHT_SCALE, scale, None, CrossbarConfig(noise="off"))
tiles, width, planes = noisy.tiles_in, noisy.signal_matrix.shape[-1], noisy.planes
dtype = variance_dtype()  # the noise-variance matmul's (bfloat16 where the CPU has it)
rows = 4 * CHUNK_ELEMENTS // ((4 + dtype.itemsize) * tiles * width)  # the noisy forward's chunk
chunks = x.shape[0] / rows
row_levels = torch.empty(tiles, rows, 128)  # [T_in, n, R]: signal table at the DAC levels
index = torch.empty(tiles, rows, 128, dtype=torch.int64)  # [T_in, n, R] table indices
noisy._dac_lookup(x[:rows], row_levels, index)
buffers = torch.empty(3, tiles, rows, width)
variance_buffer = torch.zeros(tiles, rows, width, dtype=dtype)
shape = (tiles, rows, planes, width // planes)
reads, draws = (buffers[k].view(shape).numpy() for k in (0, 2))
variance = (variance_buffer.view(torch.uint16) if dtype == torch.bfloat16
            else variance_buffer).view(shape).numpy()
row_variance = noisy._forward_variance(index, variance_buffer)[1].numpy()  # real values
key = gaussian.stream_key(0, 0)
totals, clipped = np.zeros((rows, width // planes)), np.zeros((tiles, width // planes), np.int64)
plane_weights, limit = 2.0 ** np.arange(planes - 1, -1, -1), np.float32(128)
stream = torch.Generator().manual_seed(0)
float_weight = weight.float() * WEIGHT_SCALE

with torch.inference_mode():
    whole = {
        "digital matmul": median_ms(lambda: torch.nn.functional.linear(x, float_weight), 7),
        "whole forward, noise off": median_ms(lambda: quiet(x), 5),
        "whole forward, noise on": median_ms(lambda: noisy(x), 5),
    }
    per_chunk = {
        "DAC and table lookups": lambda: noisy._dac_lookup(x[:rows], row_levels, index),
        "signal matmul": lambda: torch.bmm(row_levels, noisy.signal_matrix, out=buffers[0]),
        f"noise-variance matmul ({str(dtype)[6:]})": lambda: noisy._forward_variance(
            index, variance_buffer),
        "normal draws, torch normal_": lambda: buffers[2].normal_(generator=stream),
        "normal draws, counter-based": lambda: gaussian.standard_normals(
            key, 0, draws.reshape(tiles * rows, width)),
        "fused ADC pass, noise on": lambda: kernels.convert_noisy(
            reads, variance, row_variance, key, 0, limit, plane_weights, totals, clipped),
        "fused ADC pass, noise off": lambda: kernels.convert(
            reads, limit, plane_weights, totals, clipped, row_levels.numpy(),
            noisy._signal_columns, noisy._tie_gamma, noisy._column_abs_sums,
            noisy._column_norms),
    }
    pieces = {name: chunks * median_ms(run, 7) for name, run in per_chunk.items()}

floor = planes * whole["digital matmul"]
for name, ms in (pieces | whole).items():
    print(f"{name:36s} {ms:8.1f} ms {ms / floor:6.2f} x floor")
