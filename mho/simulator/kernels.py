"""The ADC and the digital shift-and-add of a chunk of crossbar reads, fused into one pass.

A layer's reads are [T_in, n, P, O_pad]: every input tile, row, bit plane and column is one
ADC conversion, T_in x P of them per output. As separate torch ops (round, clamp, count,
shift-and-add) these passes cost more than the crossbar matmul itself; fused, one pass costs
a few percent of it (`mho bench sim`).

Written by hand (numba): no library fuses rounding, clamping, clip counting and the weighted
sum over planes and tiles. The loops are plain enough for LLVM to vectorize the inner one.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy")
def convert(reads, limit, plane_weights, totals, clipped):  # pragma: no cover (compiled)
    """ADC codes of noiseless reads, shifted and added.

    reads: [T_in, n, P, O_pad] float32, in ADC steps (u x 2^p)
    limit: float32, the largest code magnitude 2^(p+r-1)
    plane_weights: [P] float64, 2^(P-1-k) for plane k (MSB first)
    totals: [n, O_pad] float64, += sum over tiles and planes of weight x code (exact: integers)
    clipped: [T_in, O_pad] int64, += conversions whose code was clamped
    """
    tiles, rows, planes, columns = reads.shape
    for t in range(tiles):
        for n in range(rows):
            for p in range(planes):
                weight = plane_weights[p]
                for o in range(columns):
                    code = np.rint(reads[t, n, p, o])  # round half to even, as torch.round
                    kept = min(max(code, -limit), limit)
                    clipped[t, o] += kept != code
                    totals[n, o] += weight * kept


@numba.njit(cache=True, nogil=True, error_model="numpy")
def convert_noisy(reads, variance, row_variance, draws, limit, plane_weights, totals,
                  clipped):  # pragma: no cover (compiled)
    """`convert` of reads + sqrt(variance) x draws: every conversion with its own Gaussian
    read noise.

    variance: [T_in, n, P, O_pad] float32, the column part of the read-noise variance (steps^2)
    row_variance: [T_in, n] float32, a part shared by every column of a tile row (zeros when
        the layer has none; see CrossbarLinear._variance_parts)
    draws: [T_in, n, P, O_pad] float32 standard normal draws
    """
    tiles, rows, planes, columns = reads.shape
    zero = np.float32(0)
    for t in range(tiles):
        for n in range(rows):
            shared = row_variance[t, n]
            for p in range(planes):
                weight = plane_weights[p]
                for o in range(columns):
                    deviation = np.sqrt(max(variance[t, n, p, o] + shared, zero))
                    code = np.rint(reads[t, n, p, o] + deviation * draws[t, n, p, o])
                    kept = min(max(code, -limit), limit)
                    clipped[t, o] += kept != code
                    totals[n, o] += weight * kept
