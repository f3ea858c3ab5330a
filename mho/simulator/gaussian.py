"""Counter-based standard normal draws for the fused noisy ADC pass (numba).

Every draw is a pure function of (key, row, index): a SplitMix64 hash of a Weyl counter
(Steele, Lea and Flood 2014, Java's SplittableRandom) gives two 32-bit uniforms, and a
Box-Muller transform turns them into two independent standard normals. Nothing is stateful,
so the draws do not depend on how rows are split into chunks or threads: the noisy forward
gives the same outputs, bit for bit, on any number of threads, and never writes the draws to
a full-size buffer.

Written by hand: torch's and numpy's generators are stateful streams that fill whole arrays
(torch's seeded `normal_` is serial and costs more than the crossbar matmul; see
docs/simulator.md), and no maintained library gives per-element seeded normals inside a
numba kernel. log, sin and cos are Cephes' single-precision polynomials (Moshier, Cephes
Math Library 2.2), written out so that LLVM vectorizes the loop: numba calls libm's
scalar functions for np.log and np.cos, which do not vectorize with the PyPI llvmlite.
Their error (a few float32 ulps, checked in tests/simulator/test_gaussian.py) is far below
what any statistic of the draws can resolve.

Tails: u1 = (a + 1/2) 2^-32 for a 32-bit a, so |z| <= sqrt(2 ln 2^33) = 6.76; the normal
distribution puts 1.4e-11 of its mass beyond that.

(kernels.py's cached passes compile these functions into themselves, and numba's cache
checks only the calling file's time stamp: after changing this file, delete the cached
kernels, `mho/simulator/__pycache__/kernels.*.nbi` and `.nbc`.)
"""

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's Weyl increment (odd: a bijection)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_PI_OVER_2_32 = np.float32(2 * np.pi / 2**32)
_TWO_TO_MINUS_32 = np.float32(2.0**-32)
_SQRT_HALF = np.float32(0.707106781186547524)


@numba.njit(cache=True, nogil=True, inline="always")
def mix64(z):  # pragma: no cover (compiled)
    """SplitMix64's output function: a bijection of uint64 that scatters every input bit."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@numba.njit(cache=True, nogil=True, inline="always")
def row_key(key, row):  # pragma: no cover (compiled)
    """The key of one row of draws: row is a non-negative integer (uint64 arithmetic)."""
    return mix64(key + (np.uint64(row) + np.uint64(1)) * _GOLDEN)


@numba.njit(cache=True, nogil=True, inline="always", fastmath={"contract"})
def _log(x):  # pragma: no cover (compiled)
    """ln x of a positive normal float32 (Cephes logf): x = m 2^e, m in [sqrt(1/2), sqrt(2))."""
    bits = np.float32(x).view(np.uint32)
    e = np.int32(bits >> np.uint32(23)) - np.int32(126)
    # numba widens uint32 arithmetic to 64 bits: back to 32 before the bit cast
    m = np.uint32(bits & np.uint32(0x007FFFFF) | np.uint32(0x3F000000)).view(np.float32)
    small = m < _SQRT_HALF
    e = e - np.int32(small)
    m = (m + m if small else m) - np.float32(1)
    z = m * m
    y = np.float32(7.0376836292e-2)
    y = y * m + np.float32(-1.1514610310e-1)
    y = y * m + np.float32(1.1676998740e-1)
    y = y * m + np.float32(-1.2420140846e-1)
    y = y * m + np.float32(1.4249322787e-1)
    y = y * m + np.float32(-1.6668057665e-1)
    y = y * m + np.float32(2.0000714765e-1)
    y = y * m + np.float32(-2.4999993993e-1)
    y = y * m + np.float32(3.3333331174e-1)
    y = y * m * z
    fe = np.float32(e)
    y = y + np.float32(-2.12194440e-4) * fe - np.float32(0.5) * z
    return m + y + np.float32(0.693359375) * fe


@numba.njit(cache=True, nogil=True, inline="always", fastmath={"contract"})
def _pair(h):  # pragma: no cover (compiled)
    """Two independent standard normals (float32) from one 64-bit hash (Box-Muller)."""
    a = np.float32(h >> _S32)  # [0, 2^32): rounds to 24 bits, exact below 2^24
    u1 = (a + np.float32(0.5)) * _TWO_TO_MINUS_32  # (0, 1]
    radius = np.sqrt(np.float32(-2) * _log(u1))
    # angle 2 pi b / 2^32, reduced exactly in integers to a quadrant q and x in [-pi/4, pi/4)
    b = np.uint32(h & _LOW32)
    q = (b + np.uint32(1 << 29)) >> np.uint32(30)
    x = np.float32(np.int32(b - (q << np.uint32(30)))) * _TWO_PI_OVER_2_32
    z = x * x
    sin = ((np.float32(-1.9515295891e-4) * z + np.float32(8.3321608736e-3)) * z
           + np.float32(-1.6666654611e-1)) * z * x + x
    cos = ((np.float32(2.443315711809948e-5) * z + np.float32(-1.388731625493765e-3)) * z
           + np.float32(4.166664568298827e-2)) * z * z - np.float32(0.5) * z + np.float32(1)
    q = q & np.uint32(3)  # angle = q pi / 2 + x
    swap = (q & np.uint32(1)) != np.uint32(0)
    c, s = (sin if swap else cos), (cos if swap else sin)
    c = -c if (q == np.uint32(1)) | (q == np.uint32(2)) else c
    s = -s if q >= np.uint32(2) else s
    return radius * c, radius * s


@numba.njit(cache=True, nogil=True, fastmath={"contract", "nnan", "ninf"})
def fill_row(key, out):  # pragma: no cover (compiled)
    """out[j] = the j-th standard normal of the row whose key is `key` (row_key); out: 1-D
    float32. Draw pairs j and j + ceil(W / 2) share a hash (the two Box-Muller outputs).

    (nnan, ninf: no NaN or infinity arises, and they let LLVM use the sqrt instruction, so
    that the loop vectorizes; two slices rather than out[j + half], which it does not.)"""
    width = out.shape[0]
    half = (width + 1) // 2
    first, second = out[: width // 2], out[half:]
    for j in range(width // 2):
        x, y = _pair(mix64(key + np.uint64(j + 1) * _GOLDEN))
        first[j] = x
        second[j] = y
    if width % 2:  # the middle draw's pair has no partner
        out[half - 1] = _pair(mix64(key + np.uint64(half) * _GOLDEN))[0]


@numba.njit(cache=True, nogil=True, parallel=True)
def standard_normals(key, first_row, out):  # pragma: no cover (compiled)
    """out [rows, W] float32: row i holds the draws of row first_row + i under `key`."""
    for i in numba.prange(out.shape[0]):
        fill_row(row_key(key, first_row + i), out[i])


def stream_key(seed: int, stream: int) -> np.uint64:
    """The key of draw stream `stream` (e.g. a forward's count) of a seed: two mixes, so
    neighbouring seeds and streams start far apart on the 2^64 Weyl cycle."""
    with np.errstate(over="ignore"):
        seed_key = _mix(np.uint64(seed % 2**64) + _GOLDEN)
        return _mix(seed_key + np.uint64(stream % 2**64) * _GOLDEN + _GOLDEN)


def _mix(z: np.uint64) -> np.uint64:
    """mix64 in numpy (uint64 arithmetic wraps, as in the compiled one)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)
