"""The ADC and the digital shift-and-add of a chunk of crossbar reads, fused into one pass.

A layer's reads are [T_in, n, P, O_pad]: every input tile, row, bit plane and column is one
ADC conversion, T_in x P of them per output. As separate torch ops (round, clamp, count,
shift-and-add) these passes cost more than the crossbar matmul itself; fused, one pass costs
a few percent of it (`mho bench sim`).

Written by hand (numba): no library fuses rounding, clamping, clip counting and the weighted
sum over planes and tiles. The loops are plain enough for LLVM to vectorize the inner one.

Every pass runs groups of rows on numba's threads (the simulator sets
as many as torch's): each group owns its rows of `totals` and its own clip counts, summed at
the end, so the result is the same on any number of threads. The noisy pass draws its
Gaussian noise itself, from a counter-based generator (gaussian.py): every draw is a
function of (key, row, column), so it too is the same on any number of threads.
"""

import numba
import numpy as np
from numba.extending import overload

from mho.simulator import gaussian

# (1 + 2^-30): room for the float64 rounding of the bound's own norms and sums (relative
# errors near R x 2^-53), so the bound stays an upper bound of the float32 error
_BOUND_MARGIN = 1.0 + 2.0**-30
# (1 + 2^-18): a row's bound scale, rounded to float32, stays above the exact bound after the
# float32 roundings of the scale, the column factor and their product (each <= 2^-24)
_FLOAT32_MARGIN = 1.0 + 2.0**-18
# (1 + 2^-20): a column's sum |g_r| and ||g||_2 rounded to float32, never below their value
COLUMN_FACTOR_MARGIN = 1.0 + 2.0**-20
_ROW_GROUPS = 16  # row groups a pass is split into (a few per thread: uneven rows balance)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot64(levels, column):  # pragma: no cover (compiled)
    """sum_r levels[r] x column[r] in float64. The products of float32 values are exact, so
    the order of the sum (free here, so that it vectorizes) moves the result by a few float64
    ulps at most: far below a rounding tie's float32 width."""
    total = 0.0
    for r in range(levels.shape[0]):
        total += levels[r] * np.float64(column[r])
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dac_lookup(x, scale, limit, table, levels, index):  # pragma: no cover (compiled)
    """The DAC of a chunk of rows and its lookup, in one pass: levels[t, n, r] =
    table[level + limit] of input feature t R + r of row n, where level is
    `crossbar.dac_levels`' round-half-even(clamp(x / scale, -limit, limit)) in x's own
    float type, bit for bit; features past the input (the last tile's padding) read
    table[limit] (level 0, 0 V). Returns how many inputs were NaN (they have no level).

    x: [n, I] float32 or float64; scale: a number of x's type; limit: 2^(b-1) - 1
    table: [L] float32; levels: [T_in, n, R] float32 (out)
    index: [T_in, n, R] int64 (out, the table indices, for the noise tables' lookups), or an
        empty array where they are not needed

    Why: torch's divide, clamp, round, cast, pad, transpose and gather made as many passes
    over the chunk and temporaries as large as the reads' buffer, several of them at once."""
    tiles, rows, tile_rows = levels.shape
    features = x.shape[1]
    low, high = -x.dtype.type(limit), x.dtype.type(limit)
    want_index = index.shape[0] > 0
    invalid = 0
    for n in range(rows):
        for t in range(tiles):
            out = levels[t, n]
            first = t * tile_rows
            for r in range(tile_rows):
                if first + r < features:
                    value = x[n, first + r] / scale
                    invalid += value != value
                    level = np.int64(np.rint(min(max(value, low), high))) if value == value else 0
                else:
                    level = 0
                out[r] = table[level + limit]
                if want_index:
                    index[t, n, r] = level + limit
    return invalid


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def convert(reads, limit, plane_weights, totals, clipped, row_levels, matrix, gamma,
            column_abs_sums, column_norms):  # pragma: no cover (compiled)
    """ADC codes of noiseless reads, shifted and added; a read within the float32 matmul's
    error bound of a rounding boundary is recomputed in float64 before it is rounded.

    reads: [T_in, n, P, O_pad] float32, in ADC steps (u x 2^p), from a float32 matmul
    limit: float32, the largest code magnitude 2^(p+r-1)
    plane_weights: [P] float64, 2^(P-1-k) for plane k (MSB first)
    totals: [n, O_pad] float64, += sum over tiles and planes of weight x code (exact: integers)
    clipped: [T_in, O_pad] int64, += conversions whose code was clamped
    row_levels: [T_in, n, R] float32, the reads' rows: the signal table's entries (ADC steps)
        at their DAC levels (dac_lookup)
    matrix: [T_in, P * O_pad, R] float32, each column's conductances contiguous (the
        signal matrix transposed: a recompute reads one cache-friendly row)
    gamma: gamma_R = R u / (1 - R u), u = 2^-24 (0 turns the recompute off)
    column_abs_sums, column_norms: [T_in, P * O_pad] float32, sum_r |g_r| and ||g||_2 of each
        column, rounded up (x (1 + 2^-20) before the float32 rounding)

    The bound: any float32 sum of R products, in any order, FMA or not, is within
    gamma_R sum_r |a_r g_r| of the exact sum, and sum_r |a_r g_r| is at most both
    max_r |a_r| sum_r |g_r| and ||a||_2 ||g||_2 (Cauchy-Schwarz); the smaller of the two,
    from the row's own levels, recomputes about four times fewer reads than the global
    max |a| x sum |g| on Gaussian inputs. The test runs in float32 (twice the lanes of
    float64): |read - code| - 1/2 is exact there, and the row's scale is rounded up by
    (1 + 2^-18), more than the three float32 roundings (column factor, scale, product) can
    take back, so the float32 bound is never below the exact one.

    Why: a float32 sum's rounding depends on its order (BLAS blocking, another runtime), and
    a read that lands near k + 1/2 rounds to either code. Products of float32 values are
    exact in float64, so the recomputed read is the same in every implementation that sums
    in float64 (the ONNX body and the numpy OpRun): the codes agree, not just almost.

    One vectorized loop rounds, clamps, counts and adds every read and flags the near ties;
    the flags are then scanned eight at a time (as uint64 words: 0.4% of the reads are
    flagged, but most rows have one) and a flagged read whose recomputed code differs has
    its clamped code's contribution and clip count replaced. A tile's planes are added in
    float32, then into the float64 totals: every term is an integer, |code| <= 2^15 and the
    plane weights sum to at most 127, so each partial sum is below 2^22 and exact (float32
    has 24 bits), and the totals are the same in any order of addition.
    """
    tiles, rows, planes, columns = reads.shape
    tile_rows = row_levels.shape[2]
    groups = min(_ROW_GROUPS, rows)
    group_clipped = np.zeros((groups, tiles, columns), dtype=clipped.dtype)
    half = np.float32(0.5)
    for group in numba.prange(groups):
        levels = np.empty(tile_rows)  # the row's DAC levels in ADC steps, float64
        words = np.zeros((columns + 7) // 8, dtype=np.uint64)  # near-tie flags, 8 per word
        near = words.view(np.uint8)
        tile_sum = np.empty(columns, dtype=np.float32)  # one tile's planes, exact (see below)
        for t in range(tiles):
            clip = group_clipped[group, t]
            for n in range(group * rows // groups, (group + 1) * rows // groups):
                largest = 0.0
                squares = 0.0
                for r in range(tile_rows):
                    level = np.float64(row_levels[t, n, r])
                    levels[r] = level
                    largest = max(largest, abs(level))
                    squares += level * level
                scale_max = np.float32(gamma * _BOUND_MARGIN * _FLOAT32_MARGIN * largest)
                scale_norm = np.float32(gamma * _BOUND_MARGIN * _FLOAT32_MARGIN
                                        * np.sqrt(squares))
                tile_sum[:] = 0
                for p in range(planes):
                    weight = np.float32(plane_weights[p])
                    first = p * columns
                    row = reads[t, n, p]  # 1-D views: their loops vectorize
                    sums = column_abs_sums[t, first : first + columns]
                    norms = column_norms[t, first : first + columns]
                    flagged = 0
                    for o in range(columns):  # codes, clamp, count, add, near-tie flags
                        read = row[o]
                        code = np.rint(read)
                        kept = min(max(code, -limit), limit)
                        clip[o] += kept != code
                        tile_sum[o] += weight * kept
                        flag = abs(abs(read - code) - half) <= min(scale_max * sums[o],
                                                                   scale_norm * norms[o])
                        near[o] = np.uint8(flag)
                        flagged += flag
                    for w in range(words.shape[0]):  # the few near ties, in float64
                        if flagged == 0:
                            break
                        if not words[w]:
                            continue
                        for o in range(8 * w, min(8 * w + 8, columns)):
                            if not near[o]:
                                continue
                            flagged -= 1
                            code = np.rint(row[o])
                            exact = np.float32(np.rint(_dot64(levels, matrix[t, first + o])))
                            if exact != code:
                                kept = min(max(code, -limit), limit)
                                kept_exact = min(max(exact, -limit), limit)
                                clip[o] += np.int64(kept_exact != exact) - np.int64(kept != code)
                                tile_sum[o] += weight * (kept_exact - kept)
                total = totals[n]
                for o in range(columns):
                    total[o] += tile_sum[o]
    clipped += group_clipped.sum(axis=0)


def _widen(value):  # pragma: no cover (replaced by its overload in compiled code)
    """float32 of a float32, or of bfloat16 bits held in a uint16 (numpy has no bfloat16)."""


@overload(_widen, inline="always")
def _widen_overload(value):
    if isinstance(value, numba.types.Integer):  # bfloat16 bits: float32's high half
        return lambda value: np.uint32(np.uint32(value) << np.uint32(16)).view(np.float32)
    return lambda value: value


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def convert_noisy(reads, variance, row_variance, key, first_row, limit, plane_weights, totals,
                  clipped):  # pragma: no cover (compiled)
    """`convert` of reads + sqrt(variance) x a standard normal draw: every conversion with
    its own Gaussian read noise, drawn here (gaussian.py) rather than read from a buffer.

    variance: [T_in, n, P, O_pad] float32, or bfloat16 bits as uint16, the column part of the
        read-noise variance (steps^2)
    row_variance: [T_in, n] float32, a part shared by every column of a tile row (zeros when
        the layer has none; see CrossbarLinear._forward_variance)
    key: uint64, the forward's draw key (gaussian.stream_key); first_row: the chunk's first
        row in the forward. Tile t of row N draws row N x T_in + t of the key, P x O_pad
        normals (plane-major), so the draws depend on neither the chunks nor the threads.
    """
    tiles, rows, planes, columns = reads.shape
    zero = np.float32(0)
    groups = min(_ROW_GROUPS, rows)
    group_clipped = np.zeros((groups, tiles, columns), dtype=clipped.dtype)
    for group in numba.prange(groups):
        draws = np.empty(planes * columns, dtype=np.float32)
        tile_sum = np.empty(columns, dtype=np.float32)  # exact, as in `convert`
        for t in range(tiles):
            clip = group_clipped[group, t]
            for n in range(group * rows // groups, (group + 1) * rows // groups):
                gaussian.fill_row(gaussian.row_key(key, (first_row + n) * tiles + t), draws)
                shared = row_variance[t, n]
                tile_sum[:] = 0
                for p in range(planes):
                    weight = np.float32(plane_weights[p])
                    row, spread = reads[t, n, p], variance[t, n, p]  # 1-D views: they vectorize
                    noise = draws[p * columns : (p + 1) * columns]
                    for o in range(columns):
                        deviation = np.sqrt(max(_widen(spread[o]) + shared, zero))
                        code = np.rint(row[o] + deviation * noise[o])
                        kept = min(max(code, -limit), limit)
                        clip[o] += kept != code
                        tile_sum[o] += weight * kept
                total = totals[n]
                for o in range(columns):
                    total[o] += tile_sum[o]
    clipped += group_clipped.sum(axis=0)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def convert_per_channel(index, drive, taps, tile_rows, limit, plane_weights, totals,
                        clipped):  # pragma: no cover (compiled)
    """ADC codes of a per-channel depthwise layer's noiseless reads, shifted and added: every
    channel's column sums only its own taps' cells.

    index: [n, C, K] int64 lookup-table index (DAC level + limit) of each channel's window
    drive: [L] float64, the signal table in ADC steps
    taps: [C_pad, P, K_pad] float64, r+ - r- of channel c's tap k on plane p
    tile_rows: rows per tile; taps k in [t R, (t + 1) R) are read (converted) together
    totals: [n, C_pad] float64, += sum over tiles and planes of weight x code
    clipped: [T_in, C_pad] int64, += conversions whose code was clamped

    Products of two float32 values are exact in float64 and the sums of K of them nearly
    so: the reads do not depend on summation order at float32 resolution (the ONNX body and
    the numpy OpRun compute the same float64 reads). Groups of rows run on numba's threads,
    each with its own rows of `totals` and its own clip counts: the same result on any
    number of threads.
    """
    rows, channels, kernel = index.shape
    planes = taps.shape[1]
    tiles = (kernel + tile_rows - 1) // tile_rows
    groups = min(_ROW_GROUPS, rows)
    group_clipped = np.zeros((groups,) + clipped.shape, dtype=clipped.dtype)
    for group in numba.prange(groups):
        clip = group_clipped[group]
        for n in range(group * rows // groups, (group + 1) * rows // groups):
            for c in range(channels):
                for t in range(tiles):
                    stop = min((t + 1) * tile_rows, kernel)
                    for p in range(planes):
                        read = 0.0
                        for k in range(t * tile_rows, stop):
                            read += drive[index[n, c, k]] * taps[c, p, k]
                        code = np.rint(read)
                        kept = min(max(code, -limit), limit)
                        clip[t, c] += kept != code
                        totals[n, c] += plane_weights[p] * kept
    clipped += group_clipped.sum(axis=0)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def convert_per_channel_noisy(index, drive, taps, tile_rows, limit, plane_weights, totals,
                              clipped, noise_low, noise_slope, signs, signed_taps, key,
                              first_row):  # pragma: no cover (compiled)
    """`convert_per_channel` with read noise: each read gets sqrt(variance) x its draw, the
    variance summed over the channel's own cells only.

    noise_low, noise_slope: [L] float64, the noise tables in ADC steps^2 (t_L, t_D)
    signs: [C_pad, P, K_pad] float64, s+ + s- of each pair; signed_taps: s+ r+ + s- r-
    key, first_row: as in `convert_noisy`; row N draws row N of the key, T_in x P x C_pad
        normals (tile, then plane, then channel): the same on any number of threads
    """
    rows, channels, kernel = index.shape
    planes = taps.shape[1]
    padded = taps.shape[0]
    tiles = (kernel + tile_rows - 1) // tile_rows
    groups = min(_ROW_GROUPS, rows)
    group_clipped = np.zeros((groups,) + clipped.shape, dtype=clipped.dtype)
    for group in numba.prange(groups):
        clip = group_clipped[group]
        draws = np.empty(tiles * planes * padded, dtype=np.float32)
        for n in range(group * rows // groups, (group + 1) * rows // groups):
            gaussian.fill_row(gaussian.row_key(key, first_row + n), draws)
            for c in range(channels):
                for t in range(tiles):
                    stop = min((t + 1) * tile_rows, kernel)
                    for p in range(planes):
                        read = 0.0
                        variance = 0.0
                        for k in range(t * tile_rows, stop):
                            i = index[n, c, k]
                            read += drive[i] * taps[c, p, k]
                            variance += noise_low[i] * signs[c, p, k]
                            variance += noise_slope[i] * signed_taps[c, p, k]
                        read += (np.sqrt(max(variance, 0.0))
                                 * draws[(t * planes + p) * padded + c])
                        code = np.rint(read)
                        kept = min(max(code, -limit), limit)
                        clip[t, c] += kept != code
                        totals[n, c] += plane_weights[p] * kept
    clipped += group_clipped.sum(axis=0)
