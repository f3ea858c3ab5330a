"""`mho bench sim`: it measures the layer it says it measures, and checks its simulator
against the per-cell reference. Timings themselves are not asserted (a shared machine's
speed is no property of the code)."""

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
    assert all(summary[key] > 0 for key in KEYS - {"memory_ratio"})
    # the fast path and the per-cell reference agree up to float32 ADC rounding ties: at most
    # one code of the most significant plane (output step x 2^(planes-1))
    assert summary["naive_max_difference"] < 0.05
