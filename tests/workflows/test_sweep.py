"""`mho sweep`: settings x chips as resumable jobs, the same results from one process, a
process pool and Ray; reports in markdown, JSON, CSV and PNG; noise and layout axes, rules
from the command line; clear errors for bad presets."""

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from mho import __version__
from mho.cli import main
from mho.data.datasets import copy_subset, shipped_manifest
from mho.data.lexicon import PHONE_VOCABULARY
from mho.errors import ConfigError
from mho.models.checkpoint import save_checkpoint
from mho.models.conformer import ConformerCTC, conformer_config
from mho.models.quant import calibrate
from mho.simulator.config import LayerRule, SimulatorConfig
from mho.workflows.sweep import (
    PRESETS,
    chip_groups,
    plan_jobs,
    run_job,
    run_jobs,
    sweep_settings,
)


def tiny_qat(path, pe):
    torch.manual_seed(0)
    model = ConformerCTC(conformer_config("tiny", pe=pe))
    model.enable_quantization(weight_bits=4)
    calibrate(model, [(torch.randn(2, 300, 80) * 3, torch.tensor([300, 200]))])
    save_checkpoint(path, {"model_type": "conformer-ctc", "model_config": model.config.to_dict(),
                           "vocabulary": list(PHONE_VOCABULARY.tokens), "metadata": {},
                           "state_dict": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    data = root / "two.jsonl"
    copy_subset(shipped_manifest("flite-slt"), data, count=2, seed=1)
    return tiny_qat(root / "tiny.pt", "sinusoidal+linear"), data


def sweep(model, data, out, *extra):
    result = CliRunner().invoke(main, ["sweep", str(model), "--data", str(data), "-o", str(out),
                                       "--decoder", "greedy", "--json", *map(str, extra)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_presets_follow_the_paper():
    assert [s.adc for s in PRESETS["table2"]] == [(4, 4), (4, 8), (8, 8), (3, 5), (2, 6)]
    assert [s.layers[0].adc for s in PRESETS["figure1"]] == [
        (4, 4), (4, 8), (3, 5), (2, 6), (1, 7), (0, 8)]
    assert all(s.adc == (4, 4) for s in PRESETS["figure1"] + PRESETS["oracle"])
    labels = [s.label for s in sweep_settings(["table2", "figure1"], [(4, 8)])]
    assert labels[0].startswith("base") and len(labels) == len(set(labels))


def test_sweep_reports_and_resumes(setup, tmp_path):
    model, data = setup
    rows = sweep(model, data, tmp_path, "--preset", "oracle", "--adc", "8/8", "--runs", "2",
                 "--workers", "1")
    assert [(r["setting"], r["runs"]) for r in rows] == [
        ("base (digital QAT)", 1), ("oracle (pe digital)", 2), ("all 8/8", 2)]
    oracle = rows[1]
    assert oracle["pe_clipping"] == 0.0  # the PE layers ran digitally: no ADC to clip
    assert rows[0]["most_clipped_layer"] is None  # nothing on crossbars at all
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| oracle (pe digital) | 2 |" in (tmp_path / "sweep.md").read_text()
    stored = json.loads((tmp_path / "sweep.json").read_text())
    assert len(stored["jobs"]) == 5 and stored["settings"] == rows

    jobs = sorted((tmp_path / "jobs").glob("*.json"))
    assert len(jobs) == 5
    stamps = {p: p.stat().st_mtime_ns for p in jobs}
    jobs[0].unlink()  # as if the sweep had stopped before this job finished
    again = sweep(model, data, tmp_path, "--preset", "oracle", "--adc", "8/8", "--runs", "2",
                  "--workers", "1")
    assert again == rows  # seeded chips: the redone job gives the same result
    assert all(p.stat().st_mtime_ns == stamps[p] for p in jobs[1:])  # the others were reused


def test_a_process_pool_gives_the_same_results(setup, tmp_path):
    model, data = setup
    serial = sweep(model, data, tmp_path / "a", "--adc", "3/5", "--runs", "2", "--workers", "1")
    pooled = sweep(model, data, tmp_path / "b", "--adc", "3/5", "--runs", "2", "--workers", "2")
    assert pooled == serial


def test_ray_runs_the_same_jobs(setup, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra (mho[ray])")
    model, data = setup
    local = sweep(model, data, tmp_path / "a", "--adc", "2/6", "--runs", "1", "--workers", "1")
    on_ray = sweep(model, data, tmp_path / "b", "--adc", "2/6", "--runs", "1", "--ray")
    assert on_ray == local


def test_pe_presets_need_pe_layers(setup, tmp_path):
    _, data = setup
    model = tiny_qat(tmp_path / "none.pt", "none")
    result = CliRunner().invoke(main, ["sweep", str(model), "--data", str(data), "-o",
                                       str(tmp_path / "out"), "--preset", "figure1"])
    assert result.exit_code == 1
    assert "linear_pos" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_noise_and_layout_axes_cross_every_chip_setting():
    settings = sweep_settings(["oracle"], [(8, 8)], noises=["off", "legacy"],
                              layouts=["per-channel", "block-diagonal"])
    assert settings[0].label.startswith("base") and settings[0].noise is None
    chips = settings[1:]
    assert len(chips) == 2 * 2 * 2 and len({s.label for s in chips}) == 8
    assert {(s.noise, s.depthwise) for s in chips if s.adc == (8, 8)} == {
        (n, d) for n in ("off", "legacy") for d in ("per-channel", "block-diagonal")}
    config = chips[-1].simulator_config(SimulatorConfig(noise="physical"))
    assert (config.noise, config.depthwise, config.adc) == ("legacy", "block-diagonal", (8, 8))
    # no axes: the settings (and so the job ids) of a plain sweep
    assert all(s.noise is None and s.depthwise is None for s in sweep_settings(["table2"]))
    with pytest.raises(ConfigError, match="noise must be one of"):
        sweep_settings(["table2"], noises=["loud"])


def test_steered_sweep_records_its_config_and_writes_csv(setup, tmp_path):
    model, data = setup
    rows = sweep(model, data, tmp_path, "--adc", "8/8", "--runs", "1", "--workers", "1",
                 "--noise", "off", "--noise", "legacy", "--depthwise", "block-diagonal",
                 "--digital", "*.linear_pos", "--layer", "ctc_head=2/6")
    assert [r["setting"] for r in rows] == [
        "base (digital QAT)", "all 8/8, noise off", "all 8/8, noise legacy"]
    assert all(r["pe_clipping"] == 0.0 for r in rows)  # linear_pos digital everywhere
    jobs = [json.loads(p.read_text()) for p in (tmp_path / "jobs").glob("*.json")]
    chip_jobs = sorted((j for j in jobs if j["preset"] != "base"), key=lambda j: j["setting"])
    assert [j["config"]["noise"] for j in chip_jobs] == ["legacy", "off"]
    for job in chip_jobs:
        config = SimulatorConfig.from_dict(job["config"])
        assert config.depthwise == "block-diagonal" and config.adc == (8, 8)
        assert config.layers[:2] == (LayerRule("ctc_head", adc=(2, 6)),
                                     LayerRule("*.linear_pos", digital=True))
        assert job["mho_version"] == __version__
    with open(tmp_path / "sweep.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert [r["setting"] for r in table] == [r["setting"] for r in rows]
    assert [float(r["wer"]) for r in table] == pytest.approx([r["wer"] for r in rows])


def test_jobs_sharing_a_seed_share_one_chip_with_the_same_results(setup):
    """Converter, noise and digital settings of one seed read one programmed chip; each
    job's result equals programming a chip for it alone (programming depends on the seed
    only)."""
    model, data = setup
    settings = sweep_settings(["oracle"], [(8, 8), (3, 5)], noises=["off", "legacy"])
    jobs = plan_jobs(str(model), str(data), "greedy", settings, SimulatorConfig(), 1, 4)
    groups = chip_groups(jobs)
    (group,) = groups  # the digital base too: it reads the chip with every layer digital
    assert len(group) == 7
    shared = run_jobs(group)
    alone = [run_job(job) for job in group]
    for one, other in zip(shared, alone, strict=True):
        assert (one["id"], one["wer"], one["cer"], one["clipping"]) == (
            other["id"], other["wer"], other["cer"], other["clipping"])
    # another weight precision is another chip
    other = SimulatorConfig(layers=(LayerRule("ctc_head", weight_bits=3),))
    more = plan_jobs(str(model), str(data), "greedy", settings[1:2], other, 1, 4)
    assert len(chip_groups(group + more)) == 2
