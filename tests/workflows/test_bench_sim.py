"""`mho bench sim`: the measurements it reports are consistent with each other."""

import json

from click.testing import CliRunner

from mho.cli import main

KEYS = {"floor_ratio_noise_off", "floor_ratio_noise_on", "speedup_vs_naive", "memory_ratio",
        "program_cells_per_s"}


def test_bench_sim_json_reports_the_ratios():
    result = CliRunner().invoke(main, ["bench", "sim", "--size", "160", "--rows", "300",
                                       "--weight-bits", "4", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert KEYS <= set(summary)
    # a 160 x 160 layer pads to 2 x 2 tiles of 128; 4-bit weights: 3 planes, 2 polarities
    assert summary["program_cells"] == 3 * 2 * 256 * 256
    assert summary["floor_ms"] == 3 * summary["digital_ms"]
    assert summary["floor_ratio_noise_off"] == summary["simulator_ms"]["off"] / summary["floor_ms"]
    assert summary["floor_ratio_noise_on"] > summary["floor_ratio_noise_off"]  # noise costs
    assert summary["speedup_vs_naive"] > 1
    # the fast path and the per-cell reference agree up to float32 ADC rounding ties: at most
    # one code of the most significant plane (output step x 2^(planes-1))
    assert summary["naive_max_difference"] < 0.05
