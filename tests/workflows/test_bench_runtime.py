"""`mho bench runtime` end to end on one utterance: every ratio is measured and positive."""

import json

import pytest
from click.testing import CliRunner

from mho.cli import main


@pytest.mark.slow
def test_bench_runtime_reports_every_ratio():
    result = CliRunner().invoke(main, ["bench", "runtime", "--utterances", "1", "--repeats", "1",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("ort_vs_torch_digital", "ort_vs_torch_memristor", "function_vs_pyop",
                "function_vs_pyop_noise_off"):
        assert report[key] > 0, key
    assert set(report["ms"]) == {f"{what}/{runtime}" for what, runtime in (
        ("digital", "torch"), ("digital", "ort"), ("memristor", "torch"), ("memristor", "ort"),
        ("layer", "function"), ("layer", "pyop"), ("layer_noise_off", "function"),
        ("layer_noise_off", "pyop"))}
