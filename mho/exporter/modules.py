"""Export twins: the same computation as a QAT or crossbar-mapped model, written in ops that
`torch.onnx.export(dynamo=True)` turns into plain ONNX, with each crossbar core emitted as one
`ai.mho.memristor::CrossbarLinear` node.

- QAT layers: activations fake-quantized with QAT's own ops (Div, Clip, Round, Mul: the
  symmetric +-127 grid, which QuantizeLinear's -128..127 cannot express), weights stored as
  int8 integers times their float32 scale (Cast + Mul of initializers, folded by onnxruntime
  at load): bit for bit the weight QAT computes with, a quarter of the float size.
- Crossbar layers: convolutions unfold their input with an identity-kernel Conv (each output
  channel copies one input tap: exact, and a standard op every runtime runs fast), in the
  channel-major row order the chips were programmed in; every core's reads are one
  CrossbarLinear node whose initializers are that core's chip; the float bias and the output
  quantizer stay digital, standard ops.

These modules only exist to be exported: in eager mode a CrossbarLinear node has no value.
"""

import copy
import math

import torch
from torch import nn

from mho.data.features import FeatureConfig, LogMel
from mho.exporter.ops.crossbar import DOMAIN, crossbar_tensors
from mho.models.quant import QuantLayer
from mho.simulator.layers import CrossbarLayer


class FakeQuant(nn.Module):
    """x -> round(clip(x / scale, -limit, limit)) * scale, QAT's activation grid."""

    def __init__(self, scale: torch.Tensor | float, limit: int):
        super().__init__()
        self.limit = limit
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(torch.clamp(x / self.scale, -self.limit, self.limit)) * self.scale


class ExportQuantLayer(nn.Module):
    """A QAT Linear / Conv1d / Conv2d with its integer weights: same outputs, exportable."""

    def __init__(self, layer: QuantLayer):
        super().__init__()
        self.kind = layer.kind
        self.input_quantizer = FakeQuant(layer.input_observer.scale_tensor(),
                                         layer.input_observer.limit)
        self.output_quantizer = FakeQuant(layer.output_observer.scale_tensor(),
                                          layer.output_observer.limit)
        dtype = torch.int8 if layer.weight_bits <= 8 else torch.int32
        self.register_buffer("integer_weight", layer.integer_weight().to(dtype))
        self.register_buffer("weight_scale", layer.weight_scale_tensor().detach().clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        if self.kind != "linear":
            self.conv = dict(stride=layer.stride, padding=layer.padding,
                             dilation=layer.dilation, groups=layer.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        weight = self.integer_weight.float() * self.weight_scale
        if self.kind == "linear":
            y = nn.functional.linear(x, weight, self.bias)
        elif self.kind == "conv2d":
            y = nn.functional.conv2d(x, weight, self.bias, **self.conv)
        else:
            y = nn.functional.conv1d(x, weight, self.bias, **self.conv)
        return self.output_quantizer(y)


class ExportCrossbarCore(nn.Module):
    """One crossbar core as a CrossbarLinear node: [..., I] -> [..., O] (+ its float bias)."""

    def __init__(self, core, layer_name: str, index: int):
        super().__init__()
        tensors, self.attributes = crossbar_tensors(core)
        self.names = list(tensors)
        for name, value in tensors.items():
            self.register_buffer(name, torch.from_numpy(value))
        self.register_buffer("bias", None if core.bias is None else core.bias.clone())
        self.out_features = core.out_features
        self.node_metadata = {"layer": layer_name, "core": str(index)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.onnx.ops.symbolic(
            f"{DOMAIN}::CrossbarLinear",
            [x, *(getattr(self, name) for name in self.names)],
            self.attributes,
            dtype=torch.float32,
            shape=[*x.shape[:-1], self.out_features],
            version=1,
            metadata_props=self.node_metadata,
        )
        return y if self.bias is None else y + self.bias


def _unfold_kernel(channels: int, kernel: tuple[int, ...]) -> torch.Tensor:
    """[C prod(k), C, *k] identity: output channel c * prod(k) + j copies tap j of channel c,
    the channel-major row order of `unfold` (and of the programmed matrices)."""
    taps = channels * math.prod(kernel)
    return torch.eye(taps).reshape(taps, channels, *kernel)


class ExportCrossbarLayer(nn.Module):
    """A crossbar twin (linear, conv1d, conv2d or depthwise conv1d) as CrossbarLinear nodes."""

    def __init__(self, twin: CrossbarLayer, name: str):
        super().__init__()
        self.kind = twin.kind
        self.cores = nn.ModuleList(
            ExportCrossbarCore(core, name, i) for i, core in enumerate(twin.cores))
        quantizer = twin.output_quantizer
        self.output_quantizer = FakeQuant(quantizer.scale, quantizer.limit)
        if self.kind in ("conv1d", "conv2d"):
            self.groups, self.out_channels = twin.groups, twin.out_channels
            self.stride, self.dilation = twin.stride, twin.dilation
            self.pads = [p for pair in reversed(twin.pads) for p in pair]  # F.pad order
            self.pointwise = math.prod(twin.kernel_size) == 1 and set(twin.stride) == {1}
            in_channels = twin.cores[0].in_features // math.prod(twin.kernel_size)
            self.register_buffer("unfold", _unfold_kernel(in_channels, twin.kernel_size))
        elif self.kind == "depthwise_conv1d":
            self.group_channels = twin.group_channels
            self.stride, self.dilation = twin.stride, twin.dilation
            self.pads = (twin.pad_before, twin.pad_after)
            channels = sum(twin.group_channels)
            taps = torch.eye(twin.kernel).repeat(channels, 1)  # [C K, K]
            self.register_buffer("unfold", taps[:, None, :])  # [C K, 1, K], groups = C

    def _apply_cores(self, columns: torch.Tensor, widths: list[int]) -> torch.Tensor:
        """[..., sum(widths)] input rows, cut per core -> [..., sum of outputs]."""
        parts = columns.split(widths, dim=-1) if len(widths) > 1 else [columns]
        return torch.cat([core(part) for core, part in zip(self.cores, parts, strict=True)], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            y = self.cores[0](x)
        elif self.kind == "depthwise_conv1d":  # x: [B, C, T]
            x = nn.functional.pad(x, self.pads)
            columns = nn.functional.conv1d(x, self.unfold, stride=self.stride,
                                           dilation=self.dilation, groups=x.shape[1])
            columns = columns.transpose(1, 2)  # [B, T', C K]
            kernel = self.unfold.shape[-1]
            y = self._apply_cores(columns, [c * kernel for c in self.group_channels])
            y = y.transpose(1, 2)  # [B, C, T']
        else:  # conv1d / conv2d; conv1d runs as conv2d with width 1
            squeeze = self.kind == "conv1d"
            if squeeze:
                x = x[..., None]  # [B, C, T, 1]
            if self.pointwise:
                columns = x.permute(0, 2, 3, 1)  # [B, H, W, C]
            else:
                x = nn.functional.pad(x, self.pads)
                columns = nn.functional.conv2d(x, self.unfold, stride=self.stride,
                                               dilation=self.dilation)  # [B, C k k, H', W']
                columns = columns.permute(0, 2, 3, 1)  # [B, H', W', C k k]
            widths = [columns.shape[-1] // self.groups] * self.groups  # groups see their own
            y = self._apply_cores(columns, widths).permute(0, 3, 1, 2)  # [B, O, H', W']
            if squeeze:
                y = y[..., 0]
        return self.output_quantizer(y)


def export_twin(model: nn.Module) -> nn.Module:
    """A deep copy of a float, QAT or crossbar-mapped model (eval mode) whose quantized and
    crossbar layers are their export twins."""
    twin = copy.deepcopy(model).eval()
    replacements = {}
    for name, module in twin.named_modules():
        if isinstance(module, CrossbarLayer):
            replacements[name] = ExportCrossbarLayer(module, name)
        elif isinstance(module, QuantLayer):
            replacements[name] = ExportQuantLayer(module)
    for name, replacement in replacements.items():
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent), child, replacement)
    return twin


class WaveformInput(nn.Module):
    """The model behind the log-mel front-end: (waveform [B, S], samples [B]) ->
    (log_probs [B, T', V], out_lengths [B])."""

    def __init__(self, model: nn.Module, features: FeatureConfig | None = None):
        super().__init__()
        features = features or FeatureConfig()
        self.log_mel = LogMel(features)
        self.model = model
        self.features = features

    def forward(self, waveform: torch.Tensor, samples: torch.Tensor):
        frames = torch.div(samples, self.features.shift_samples, rounding_mode="floor") + 1
        return self.model(self.log_mel(waveform), frames)
