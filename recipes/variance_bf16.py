"""The noise-variance matmul in bfloat16 (`crossbar.variance_dtype`), on `mho bench sim`'s layer
(512 x 512, 8-bit weights, ADC 4/4, legacy noise), one thread.

    python recipes/variance_bf16.py error
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python recipes/variance_bf16.py speed

`error`: on 300 input rows, the forward's variance parts in bfloat16 against the per-read
float64 variance, relative to the layer's reference state r0 (as the forward) and
relative to r = 0 (the variance computed from r itself): the largest |matmul part| / variance,
sum_r |d_r m_r| / variance, and the relative error of the variance and of the standard
deviation (max and mean).
`speed`: the noisy chunks' variance matmul in float32 and in bfloat16 against the floor
(7 x the digital matmul), interleaved medians of 3; ONEDNN_MAX_CPU_ISA restricts what oneDNN
may use (AVX512_CORE: AVX-512 without the bfloat16 instructions; AVX2).
"""

import sys

import numpy as np
import torch

from mho.simulator.crossbar import CrossbarConfig, CrossbarLinear, dac_levels
from mho.timing import interleaved_medians_ms
from mho.workflows.bench.sim import WEIGHT_SCALE, bench_layer_inputs

torch.set_num_threads(1)
weight, x, scale = bench_layer_inputs()  # `mho bench sim`'s layer: [O, I], [N, I]
layer = CrossbarLinear.from_integer(weight, 8, WEIGHT_SCALE, scale,
                                    config=CrossbarConfig(noise="legacy"), seed=0)
tiles, width, planes = layer.tiles_in, layer.signal_matrix.shape[-1], layer.planes


def to_tiles(matrix: np.ndarray) -> np.ndarray:
    """[P, I_pad, O_pad] -> [T_in, R, P * O_pad]"""
    return matrix.reshape(planes, tiles, 128, -1).transpose(1, 2, 0, 3).reshape(tiles, 128, -1)


def error() -> None:
    chip = layer.chip
    r_plus, r_minus = chip.r_plus.astype(np.float64), chip.r_minus.astype(np.float64)
    sign_plus, sign_minus = layer._conductance_sign(r_plus), layer._conductance_sign(r_minus)
    table = layer.noise_table.double().numpy() * 16.0**2  # [2, L] in ADC steps^2
    index = layer._table_index(dac_levels(x[:300], scale, 8)).numpy()  # [T_in, N, R]
    signs = to_tiles(sign_plus + sign_minus)
    for name, reference in (("r0 = the layer's", layer._variance_reference), ("r0 = 0", 0.0)):
        m = to_tiles(sign_plus * (r_plus - reference) + sign_minus * (r_minus - reference))
        low = table[0] + reference * table[1]
        part = np.einsum("tnr,trw->tnw", table[1][index], m)
        exact = np.einsum("tnr,trw->tnw", low[index], signs) + part
        weights = np.einsum("tnr,trw->tnw", np.abs(table[1][index]), np.abs(m))
        matmul = torch.bmm(torch.from_numpy(table[1]).float().bfloat16()[torch.from_numpy(index)],
                           torch.from_numpy(m).float().bfloat16()).double().numpy()
        rows = low[index].sum(-1, keepdims=True) * layer.sign_sum
        approximate = matmul + rows
        relative = np.abs(approximate - exact) / exact
        deviation = np.abs(np.sqrt(approximate) - np.sqrt(exact)) / np.sqrt(exact)
        print(f"{name} ({reference:.4f}): |matmul part| / variance <= "
              f"{np.max(np.abs(part) / exact):.2f}, sum |d m| / variance <= "
              f"{np.max(weights / exact):.2f}; variance error max {relative.max():.1e} "
              f"mean {relative.mean():.1e}; standard deviation error max {deviation.max():.1e}")


def speed() -> None:
    rows = 195  # the noisy forward's chunk with a bfloat16 variance (16 MB of buffers)
    index = layer._table_index(dac_levels(x, scale, 8))  # [T_in, N, R]
    float_weight = weight.float() * WEIGHT_SCALE

    def chunked(dtype: torch.dtype):
        matrix, levels = layer.noise_matrix.to(dtype), layer.noise_table[1].to(dtype)
        out = torch.empty(tiles, rows, width, dtype=dtype)

        def run() -> None:
            for start in range(0, x.shape[0], rows):
                n = min(rows, x.shape[0] - start)
                torch.bmm(levels[index[:, start : start + n]], matrix, out=out[:, :n])
        return run

    runs = {"digital": lambda: torch.nn.functional.linear(x, float_weight),
            "variance matmul, float32": chunked(torch.float32),
            "variance matmul, bfloat16": chunked(torch.bfloat16)}
    with torch.inference_mode():
        ms = interleaved_medians_ms(runs, 3)
    floor = planes * ms.pop("digital")
    for name, value in ms.items():
        print(f"{name:28s} {value:8.1f} ms {value / floor:6.2f} x floor")


{"error": error, "speed": speed}[sys.argv[1]]()
