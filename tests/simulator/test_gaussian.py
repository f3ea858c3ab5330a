"""The counter-based normal draws of the noisy forward: against a float64 numpy Box-Muller of
the same hashes, against the normal distribution (moments, tails, independence), and the same
on any number of threads or chunks."""

import math

import numba
import numpy as np
import pytest
import torch

from mho.simulator import crossbar, gaussian
from mho.simulator.crossbar import CrossbarConfig, CrossbarLinear
from mho.timing import torch_threads

_EPS32 = 2.0**-24  # float32 unit roundoff


@numba.njit
def _logs(x, out):
    for i in range(x.shape[0]):
        out[i] = gaussian._log(x[i])


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's mix in numpy, written out independently of gaussian.py."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _reference_row(key: np.uint64, width: int) -> np.ndarray:
    """The draws of one row in float64: hashes of the Weyl counter, Box-Muller with numpy's
    log, cos and sin (only the uniform u1 goes through float32, as in the kernel)."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    half = (width + 1) // 2
    with np.errstate(over="ignore"):
        counters = np.arange(1, half + 1, dtype=np.uint64)
        hashes = _mix(key + counters * gamma)
    a = (hashes >> np.uint64(32)).astype(np.float32).astype(np.float64)
    b = (hashes & np.uint64(0xFFFFFFFF)).astype(np.float64)
    radius = np.sqrt(-2 * np.log((a + 0.5) * 2.0**-32))
    angle = 2 * np.pi * b / 2**32
    # draws j < ceil(W / 2) are the cosines, the rest the sines of the first counters
    out = np.concatenate((radius * np.cos(angle), (radius * np.sin(angle))[: width - half]))
    return out, radius


@pytest.mark.slow  # compiles its own kernel; the draws' test covers the log at its use
def test_log_is_within_a_few_float32_ulps_of_numpy():
    x = np.concatenate((
        np.geomspace(2.0**-33, 1, 200_001), np.linspace(0.5, 1.5, 100_001),
    )).astype(np.float32)
    out = np.empty_like(x)
    _logs(x, out)
    exact = np.log(x.astype(np.float64))
    # Cephes logf: within 2 ulps of |ln x| plus the ulp of the e ln 2 term's split constant
    assert (np.abs(out - exact) <= 4 * _EPS32 * np.maximum(np.abs(exact), 1e-30) + 1e-12).all()


@pytest.mark.parametrize("width", [1, 2, 7, 3584])
def test_draws_are_box_muller_of_the_hashes(width):
    key = gaussian.row_key(gaussian.stream_key(5, 2), 11)
    out = np.empty(width, np.float32)
    gaussian.fill_row(key, out)
    expected, radius = _reference_row(np.uint64(key), width)
    # float32 arithmetic on the way: ~10 roundings (log, sqrt, the angle, its sine / cosine
    # polynomials, the products), each <= 2^-24 relative of the radius: bound 2^-20 x radius
    bound = 16 * _EPS32 * max(float(radius.max()), 1.0)
    assert np.abs(out - expected).max() <= bound


@pytest.fixture(scope="module")
def sample():
    """2M draws: 512 rows of 4096 under one key."""
    out = np.empty((512, 4096), np.float32)
    gaussian.standard_normals(gaussian.stream_key(0, 0), 0, out)
    return out.astype(np.float64)


def test_moments_and_tails_match_the_normal_distribution(sample):
    z = sample.ravel()
    n = z.size
    # standard errors of a normal sample: mean 1 / sqrt(n), variance sqrt(2 / n), fourth
    # moment sqrt((105 - 9) / n); 5 of them: a false alarm near 6e-7 per check
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**4).mean() - 3) < 5 * math.sqrt(96 / n)
    assert abs((z**3).mean()) < 5 * math.sqrt(15 / n)
    for k in (1, 2, 3, 4, 4.5):  # two-sided tail shares against erfc, binomial errors
        p = math.erfc(k / math.sqrt(2))
        share = float((np.abs(z) > k).mean())
        assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n), (k, share, p)
    assert np.abs(z).max() <= math.sqrt(2 * math.log(2.0**33))  # the generator's own bound


def test_neighbouring_counters_rows_and_streams_are_uncorrelated(sample):
    """Correlation (and correlation of squares: dependence a linear test misses) of draws
    at neighbouring columns, Box-Muller partners, neighbouring rows and the next forward's
    stream: each estimate has standard error 1 / sqrt(n) under independence."""
    half = sample.shape[1] // 2
    nxt = np.empty((512, 4096), np.float32)
    gaussian.standard_normals(gaussian.stream_key(0, 1), 0, nxt)
    seeded = np.empty((512, 4096), np.float32)
    gaussian.standard_normals(gaussian.stream_key(1, 0), 0, seeded)
    pairs = {
        "adjacent columns": (sample[:, :-1], sample[:, 1:]),
        "Box-Muller partners": (sample[:, :half], sample[:, half:]),
        "adjacent rows": (sample[:-1], sample[1:]),
        "next stream": (sample, nxt.astype(np.float64)),
        "next seed": (sample, seeded.astype(np.float64)),
    }
    for name, (x, y) in pairs.items():
        x, y = x.ravel(), y.ravel()
        bound = 5 / math.sqrt(x.size)
        assert abs(np.corrcoef(x, y)[0, 1]) < bound, name
        assert abs(np.corrcoef(x**2, y**2)[0, 1]) < bound, name


def test_rows_are_the_same_wherever_they_start(sample):
    """A row's draws depend on (key, row) only: a block from row 100 equals those rows."""
    out = np.empty((24, 4096), np.float32)
    gaussian.standard_normals(gaussian.stream_key(0, 0), 100, out)
    assert np.array_equal(out, sample[100:124].astype(np.float32))


@pytest.mark.parametrize("noise", ["legacy", "off"])
@pytest.mark.parametrize("layout", ["linear", "per-channel"])
def test_forward_is_the_same_on_any_number_of_threads_and_chunks(monkeypatch, layout, noise):
    generator = torch.Generator().manual_seed(0)
    config = CrossbarConfig(tile_rows=16, tile_cols=8, noise=noise, noise_seed=4)
    if layout == "linear":
        weight = torch.randint(-127, 128, (20, 40), generator=generator)
        layer = CrossbarLinear.from_integer(weight, 8, 0.01, 0.02, config=config, seed=1)
        x = torch.randn(300, 40, generator=generator)
    else:
        weight = torch.randint(-127, 128, (12, 5), generator=generator)  # [C, K]
        layer = crossbar.PerChannelCrossbar.from_integer(weight, 8, 0.01, 0.02, config=config,
                                                         seed=1)
        x = torch.randn(300, 12, 5, generator=generator)
    outputs = []
    for threads, chunk in ((1, crossbar.CHUNK_ELEMENTS), (2, crossbar.CHUNK_ELEMENTS),
                           (2, 4096)):
        monkeypatch.setattr(crossbar, "CHUNK_ELEMENTS", chunk)
        layer.reseed(4)
        with torch_threads(threads):
            outputs.append(layer(x))
    assert all(torch.equal(outputs[0], y) for y in outputs[1:])
