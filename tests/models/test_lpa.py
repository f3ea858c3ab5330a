"""PulseAccumulator: contract, masking, hard gates, the content window against a naive
reference, linear growth, and export as standard ONNX ops."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mho.models.lpa import PulseAccumulator, PulseAccumulatorConfig


def make(**overrides) -> PulseAccumulator:
    torch.manual_seed(0)
    module = PulseAccumulator(PulseAccumulatorConfig(32, 4, **overrides))
    for parameter in (module.extent.weight, module.threshold):  # non-trivial gates
        torch.nn.init.normal_(parameter, std=0.5)
    return module


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("frames", [1, 15, 16, 17, 70])
def test_shapes_and_finite(batch, frames):
    module = make().eval()
    y = module(torch.randn(batch, frames, 32), torch.ones(batch, frames, dtype=torch.bool))
    assert y.shape == (batch, frames, 32) and torch.isfinite(y).all()


@pytest.mark.parametrize("training", [False, True])
def test_padding_does_not_leak(training):
    module = make().train(training)
    x = torch.randn(2, 40, 32)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 23:] = False
    batched = module(x, mask)
    alone = module(x[1:, :23], mask[1:, :23])
    torch.testing.assert_close(batched[1, :23], alone[0], atol=1e-5, rtol=1e-5)


def test_eval_gates_are_binary_and_training_gates_soft():
    module = make()
    argument = torch.linspace(-1, 1, 101)
    assert set(module.eval()._gate(argument).unique().tolist()) <= {0.0, 1.0}
    soft = module.train()._gate(argument)
    assert ((soft > 0.01) & (soft < 0.99)).any()


def test_content_window_is_the_mean_over_its_extent():
    """Hard mode: each frame's content read is the mean of v over [t - a, t + 1 + b) with
    the rounded extents, checked by an explicit loop."""
    module = make(periodic_pulses=0, basis_pulses=0).eval()
    x = torch.randn(1, 30, 32)
    valid = torch.ones(1, 30)
    with torch.no_grad():
        value = module.value(x).reshape(1, 30, 4, 8).transpose(1, 2)  # [1, H, T, d]
        pulses = module.cfg.content_pulses
        one_hot = torch.eye(pulses)[:, None, None, None, :].expand(pulses, 1, 4, 30, pulses)
        reads = torch.stack([module._content_mix(x, value, valid, w) for w in one_hot], dim=3)
        context = module.extent_conv(x.transpose(1, 2)).transpose(1, 2)
        extents = (module.cfg.max_extent * torch.sigmoid(module.extent(context))).round()
        extents = extents.reshape(1, 30, 4, module.cfg.content_pulses, 2)
    for h in range(4):
        for t in range(30):
            for p in range(module.cfg.content_pulses):
                start = max(0, t - int(extents[0, t, h, p, 0]))
                end = min(30, t + 1 + int(extents[0, t, h, p, 1]))
                expected = value[0, h, start:end].mean(dim=0)
                torch.testing.assert_close(reads[0, h, t, p], expected, atol=1e-4, rtol=1e-3)


def reference_forward(module: PulseAccumulator, x: torch.Tensor, mask: torch.Tensor):
    """The LPA's equations written plainly: every pulse's read r_p(t) built as a tensor
    [B, H, T, P, d], then mixed; content windows by an explicit loop over frames."""
    cfg, hard = module.cfg, not module.training
    batch, frames, _ = x.shape
    heads, d = cfg.num_heads, cfg.head_dim
    valid = mask.to(x.dtype)

    def gate(argument):
        return (argument > 0).float() if hard else torch.sigmoid(module.temperature * argument)

    value = (module.value(x) * valid[..., None]).reshape(batch, frames, heads, d).transpose(1, 2)
    context = module.extent_conv((x * valid[..., None]).transpose(1, 2)).transpose(1, 2)
    extents = cfg.max_extent * torch.sigmoid(module.extent(context))
    extents = extents.reshape(batch, frames, heads, cfg.content_pulses, 2)
    extents = extents.round() if hard else extents
    content = torch.zeros(batch, heads, frames, cfg.content_pulses, d)
    position = torch.arange(frames + 1, dtype=x.dtype)
    for b, h, t, p in itertools.product(range(batch), range(heads), range(frames),
                                        range(cfg.content_pulses)):
        start = max(0.0, t - float(extents[b, t, h, p, 0]))
        end = min(float(frames), t + 1 + float(extents[b, t, h, p, 1]))
        # overlap of each frame [s, s + 1) with [start, end): fractional at the edges
        cover = ((position[1:].clamp(max=end) - position[:-1].clamp(min=start)).clamp(min=0)
                 * valid[b])
        content[b, h, t, p] = cover @ value[b, h] / (cover.sum() + 1e-4)
    t = torch.arange(frames, dtype=x.dtype)
    angle = 2 * math.pi * t[None, :, None] / module.log_period.exp()[:, None, :]
    periodic = gate(torch.cos(angle + module.phase[:, None, :]) - module.threshold[:, None, :])
    periodic = periodic[None] * valid[:, None, :, None]  # [B, H, T, Pp]
    summaries = torch.einsum("bhtp,bhtd->bhpd", periodic, value)
    summaries = summaries / (periodic.sum(2)[..., None] + 1e-4)
    periodic_reads = periodic[..., None] * summaries[:, :, None]
    offset = t % cfg.chunk
    basis = gate(1 - ((offset[None, :, None] - module.basis_centre[:, None, :])
                      / module.basis_log_width.exp()[:, None, :]) ** 2)  # [H, T, Pb]
    chunk_of = torch.div(t, cfg.chunk, rounding_mode="floor").long()
    basis_reads = torch.zeros(batch, heads, frames, cfg.basis_pulses, d)
    for c in chunk_of.unique():
        inside = chunk_of == c
        g = basis[None, :, inside] * valid[:, None, inside, None]  # [B, H, K, Pb]
        chunk_summary = torch.einsum("bhkp,bhkd->bhpd", g, value[:, :, inside])
        chunk_summary = chunk_summary / (g.sum(2)[..., None] + 1e-4)
        basis_reads[:, :, inside] = basis[None, :, inside, :, None] * chunk_summary[:, :, None]
    reads = torch.cat([content, periodic_reads, basis_reads], dim=3)  # [B, H, T, P, d]
    weights = torch.softmax(module.mixing(x).reshape(batch, frames, heads, -1), -1)
    mixed = (weights.transpose(1, 2)[..., None] * reads).sum(3)
    return module.out_proj(mixed.transpose(1, 2).reshape(batch, frames, cfg.dim))


@pytest.mark.parametrize("training", [False, True])
def test_forward_matches_the_plain_equations(training):
    """Soft (training, temperature 3) and hard (eval) modes against reference_forward, with
    padding and a length that is not a multiple of the chunk."""
    torch.manual_seed(1)
    module = make()
    module.train(training)
    module.temperature.fill_(3.0)
    with torch.no_grad():  # extents away from zero, so windows vary per frame and pulse
        module.extent.weight.normal_(0, 0.5)
    x = torch.randn(2, 21, 32)
    mask = torch.arange(21)[None] < torch.tensor([[21], [13]])
    with torch.no_grad():
        expected = reference_forward(module, x, mask)
        got = module(x, mask)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-4)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def test_memory_grows_linearly_with_length():
    module = make().eval()
    largest = {}
    for frames in (1000, 2000, 4000):
        with torch.no_grad(), LargestTensor() as probe:
            module(torch.randn(1, frames, 32), torch.ones(1, frames, dtype=torch.bool))
        largest[frames] = probe.largest
    assert largest[4000] <= 2.05 * largest[2000] <= 4.2 * largest[1000]
    assert largest[4000] < 4000 * 4000 / 4  # no [T, T] tensor, not even per head


@pytest.mark.slow
def test_time_grows_linearly_with_length():
    import time

    module = make().eval()
    times = {}
    for frames in (6000, 12000):
        x, mask = torch.randn(1, frames, 32), torch.ones(1, frames, dtype=torch.bool)
        runs = []
        with torch.no_grad():
            for _ in range(5):
                started = time.perf_counter()
                module(x, mask)
                runs.append(time.perf_counter() - started)
        times[frames] = float(np.median(runs))
    assert times[12000] / times[6000] < 3.0  # 2x the frames: ~2x (quadratic would be 4x)


def test_selective_initialization_copies_value_and_output():
    from mho.models.transformer import SelfAttention

    attention = SelfAttention(32, 4, 0.0)
    module = make()
    module.initialize_from_attention(attention)
    torch.testing.assert_close(module.value.weight, attention.value.weight)
    torch.testing.assert_close(module.out_proj.bias, attention.out_proj.bias)


def test_exports_as_standard_onnx_ops_and_matches_onnxruntime(tmp_path):
    import onnx
    import onnxruntime

    module = make().eval()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lpa = module

        def forward(self, x, mask):
            return self.lpa(x, mask)

    frames = torch.export.Dim("frames", min=2, max=100_000)
    x, mask = torch.randn(1, 37, 32), torch.ones(1, 37, dtype=torch.bool)
    path = tmp_path / "lpa.onnx"
    torch.onnx.export(Wrapper().eval(), (x, mask), path, dynamo=True, opset_version=20,
                      dynamic_shapes=({1: frames}, {1: frames}))
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for length in (37, 90):
        x, mask = torch.randn(1, length, 32), torch.ones(1, length, dtype=torch.bool)
        (out,) = session.run(None, {"x": x.numpy(), "mask": mask.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(out, module(x, mask).numpy(), atol=1e-4, rtol=1e-4)
