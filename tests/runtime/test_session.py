"""One session interface over torch, onnxruntime and the ONNX reference evaluator: the same
named numpy inputs give the same named numpy outputs, for any module."""

import numpy as np
import pytest
import torch
from torch import nn

from mho.errors import MhoError
from mho.exporter.metadata import read_metadata
from mho.exporter.onnx import export_module, export_onnx
from mho.runtime.session import TorchSession, open_session
from mho.timing import torch_threads


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor, scale: torch.Tensor):
        y = self.linear(x) * scale[:, None]
        return y, y.sum(-1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    module = TwoOutputs().eval()
    path = tmp_path_factory.mktemp("session") / "two.onnx"
    example = (torch.randn(3, 6), torch.ones(3))
    export_module(module, path, example, input_names=["x", "scale"],
                  output_names=["y", "total"], dynamic_axes={"x": {0: "batch"},
                                                             "scale": {0: "batch"}})
    return module, path


@pytest.mark.parametrize("runtime", ["ort", "onnx-ref"])
def test_every_runtime_gives_torchs_outputs_by_name(exported, runtime):
    module, path = exported
    reference = open_session(module, input_names=["x", "scale"], output_names=["y", "total"])
    session = open_session(path, runtime)
    assert session.input_names == ["x", "scale"] and session.output_names == ["y", "total"]
    feeds = {"x": np.random.default_rng(1).standard_normal((5, 6), dtype=np.float32),
             "scale": np.arange(5, dtype=np.float32)}  # another batch size than traced
    expected, got = reference.run(feeds), session.run(feeds)
    for name in ("y", "total"):
        assert isinstance(got[name], np.ndarray)
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, rtol=0)


def test_bad_feeds_and_sources_are_clear_errors(exported, tmp_path):
    module, path = exported
    with pytest.raises(MhoError, match="takes inputs x, scale; got x"):
        open_session(path).run({"x": np.zeros((1, 6), np.float32)})
    with pytest.raises(MhoError, match="needs input_names and output_names"):
        open_session(module)
    with pytest.raises(MhoError, match="no such ONNX file"):
        open_session(tmp_path / "missing.onnx")
    with pytest.raises(MhoError, match="cannot open"):
        open_session(tmp_path / "model.bin")


def test_speech_export_of_a_module_without_the_contract_points_to_export_module(tmp_path):
    with pytest.raises(MhoError, match="export_module"):
        export_onnx(nn.Linear(3, 2), tmp_path / "x.onnx", metadata=None)


def test_sessions_leave_torch_threads_as_they_found_them():
    before = torch.get_num_threads()
    session = TorchSession(nn.Linear(2, 2), ["x"], ["y"], threads=1)
    session.run({"x": np.zeros((1, 2), np.float32)})
    assert torch.get_num_threads() == before
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_export_module_writes_no_speech_metadata(exported):
    _, path = exported
    with pytest.raises(MhoError, match="not an mho ONNX export"):
        read_metadata(path)
