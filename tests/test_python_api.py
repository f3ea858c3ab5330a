"""docs/python-api.md runs as written (its python blocks in order, one namespace), and what
it prints is true: the digits CNN keeps its accuracy on chips, the exported file agrees with
torch on both runtimes, and the public API scores a shipped Conformer exactly as `mho eval`.
"""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from mho.cli import main
from mho.data.manifest import write_manifest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


@pytest.fixture(scope="module")
def walkthrough():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    return namespace


def test_the_digits_cnn_keeps_its_accuracy_on_chips(walkthrough):
    # chance is 10%, a trained CNN gets about 91% here; 397 test images give a binomial
    # standard error of about 1.4 points, so 5 points are over three standard errors
    assert walkthrough["float_accuracy"] > 0.85
    assert walkthrough["qat_accuracy"] > walkthrough["float_accuracy"] - 0.05
    assert np.mean(walkthrough["chip_accuracies"]) > walkthrough["qat_accuracy"] - 0.05


def test_the_chip_holds_every_weight_and_says_why_the_rest_is_digital(walkthrough):
    placements = {p.name: p for p in walkthrough["placements"]}
    weights = [name for name in placements if name.endswith("weight")]
    assert weights == ["0.weight", "3.weight", "7.weight"]
    assert all(placements[n].placement == "crossbar" for n in weights)
    assert all(p.placement == "digital" and "after the ADC" in p.reason
               for n, p in placements.items() if n.endswith("bias"))


def test_the_exported_chip_has_crossbar_nodes_and_agrees_on_both_runtimes(walkthrough):
    proto = onnx.load(str(walkthrough["folder"] / "digits-chip.onnx"))
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert ("ai.mho.memristor", "CrossbarConv") in ops
    assert ("ai.mho.memristor", "CrossbarLinear") in ops
    for result in walkthrough["parity"].values():
        assert result.passed and result.inputs == 4
        assert result.outputs["logits"].argmax_agree == 1.0


def test_a_hugging_face_model_passes_check_with_its_own_vocabulary(walkthrough):
    check = walkthrough["hf_check"]
    assert check.passed and check.utterances == 2 and check.results[0].runtime == "ort"


def test_the_api_scores_a_shipped_conformer_exactly_as_the_cli(walkthrough, tmp_path):
    manifest = tmp_path / "five.jsonl"
    write_manifest(manifest, walkthrough["utterances"][:5])
    result = CliRunner().invoke(main, ["eval", "conformer-sinusoidal-linear-w8", "--data",
                                       str(manifest), "--decoder", "greedy", "--json"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    assert cli["wer"] == walkthrough["result"].wer and cli["cer"] == walkthrough["result"].cer
