"""`mho bench serve`: its arithmetic against numpy, and (slow) a short real run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mho.cli import main
from mho.serve.bench import Outcome, SideResult, _percentile, cpu_seconds


def test_percentiles_are_numpys_nearest_rank():
    values = sorted(np.random.default_rng(0).exponential(size=37).tolist())
    for q in (50, 95, 99):
        assert _percentile(values, q) == np.percentile(values, q, method="inverted_cdf")
    assert _percentile([], 50) == 0.0


def test_side_summary_counts():
    side = SideResult("batched", 8, rounds=[{"audio_seconds_per_second": r}
                                            for r in (10.0, 30.0, 20.0)])
    side.outcomes = (
        [Outcome(200, 0.1, "a", 3, reference="a") for _ in range(3)]  # one batch of 3
        + [Outcome(200, 0.2, "b", 1, reference="x")]  # a batch of 1, wrong text
        + [Outcome(None, 1.0)]  # lost
        + [Outcome(503, 0.01)]  # an error: 200 was expected
        + [Outcome(400, 0.01, expected_status=400)])  # a bad upload refused as it should be
    summary = side.summary()
    assert summary["audio_seconds_per_second"] == 20.0  # median round
    assert summary["batch_sizes"] == {"1": 1, "3": 1}
    assert (summary["errors"], summary["lost"]) == (1, 1)
    assert (summary["transcripts_identical"], summary["transcripts_checked"]) == (3, 4)
    assert summary["latency_ms"]["p50"] == pytest.approx(100.0)


def test_cpu_seconds_agree_with_os_times():
    import os
    import time

    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # use some CPU
        pass
    times = os.times()
    # the same kernel counters read two ways: they differ by the clock ticks between reads
    assert cpu_seconds(os.getpid()) == pytest.approx(times.user + times.system,
                                                     abs=3 / os.sysconf("SC_CLK_TCK"))


@pytest.mark.slow
def test_bench_serve_runs_end_to_end(model_file):
    result = CliRunner().invoke(main, [
        "bench", "serve", "--model", str(model_file), "--decoder", "greedy", "--data",
        "festival-slt", "--requests", "24", "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    for name, max_batch in (("batched", 8), ("max_batch_1", 1)):
        side = summary["sides"][name]
        assert side["max_batch"] == max_batch and side["requests"] == 24
        assert side["errors"] == 0 and side["lost"] == 0
        assert side["transcripts_identical"] == side["transcripts_checked"] == 24
        assert sum(int(k) * v for k, v in side["batch_sizes"].items()) == 24
        assert max(map(int, side["batch_sizes"])) <= max_batch
        assert side["server_cpu_ms_per_request"] > 0
    assert summary["speedup"] > 0
    assert summary["max_length_ratio"] == 1.5


@pytest.mark.slow
def test_soak_mixes_good_and_bad_uploads(model_file):
    result = CliRunner().invoke(main, [
        "bench", "serve", "--model", str(model_file), "--decoder", "greedy", "--data",
        "festival-slt", "--soak", "8", "--concurrency", "16", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    soak, side = summary["soak"], summary["sides"]["batched"]
    assert soak["good"] > 0 and soak["bad"] > 0
    assert soak["good_answered_correctly"] == soak["good"]
    assert soak["bad_answered_as_expected"] == soak["bad"]
    assert side["errors"] == 0 and side["lost"] == 0
    assert len(side["rss_mb"]["samples"]) >= 2
