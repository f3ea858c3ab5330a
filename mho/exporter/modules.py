"""Export twins: the same computation as a QAT or crossbar-mapped model, written in ops that
`torch.onnx.export(dynamo=True)` turns into plain ONNX, with each crossbar core emitted as one
`ai.mho.memristor::CrossbarLinear` or `CrossbarConv` node.

- QAT layers: activations fake-quantized with QAT's own ops (Div, Clip, Round, Mul: the
  symmetric +-127 grid, which QuantizeLinear's -128..127 cannot express), weights stored as
  int8 integers times their float32 scale (Cast + Mul of initializers, folded by onnxruntime
  at load): bit for bit the weight QAT computes with, a quarter of the float size.
- Crossbar layers: every core is one node whose initializers are that core's chip: a
  CrossbarLinear node for a Linear, a CrossbarConv node for a convolution (its body unfolds
  the input with an identity-kernel Conv, exact, in the channel-major row order the chips
  were programmed in); the float bias and the output quantizer stay digital, standard ops.

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
    """One crossbar core as a CrossbarLinear node, [..., I] -> [..., O], or with `conv` (the
    CrossbarConv attributes) as a CrossbarConv node, [B, C, *S] -> [B, O, *S']; plus its
    float bias."""

    def __init__(self, core, layer_name: str, index: int, conv: dict | None = None):
        super().__init__()
        tensors, self.attributes = crossbar_tensors(core)
        self.names = list(tensors)
        for name, value in tensors.items():
            self.register_buffer(name, torch.from_numpy(value))
        self.conv = conv or {}
        self.attributes = {**self.attributes, **self.conv}
        bias = None if core.bias is None else core.bias.clone()
        if bias is not None and conv:  # [O, 1, ...]: over the channel axis
            bias = bias.reshape(-1, *[1] * len(conv["kernel_shape"]))
        self.register_buffer("bias", bias)
        self.out_features = core.out_features
        self.node_metadata = {"layer": layer_name, "core": str(index)}

    def _output_shape(self, x: torch.Tensor) -> list:
        if not self.conv:
            return [*x.shape[:-1], self.out_features]
        rank = len(self.conv["kernel_shape"])
        pads, spatial = self.conv["pads"], []
        for axis, (k, s, d) in enumerate(zip(self.conv["kernel_shape"], self.conv["strides"],
                                             self.conv["dilations"], strict=True)):
            size = x.shape[2 + axis] + pads[axis] + pads[rank + axis]
            spatial.append((size - d * (k - 1) - 1) // s + 1)
        return [x.shape[0], self.out_features, *spatial]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.onnx.ops.symbolic(
            f"{DOMAIN}::{'CrossbarConv' if self.conv else 'CrossbarLinear'}",
            [x, *(getattr(self, name) for name in self.names)],
            self.attributes,
            dtype=torch.float32,
            shape=self._output_shape(x),
            version=1,
            metadata_props=self.node_metadata,
        )
        return y if self.bias is None else y + self.bias


class ExportCrossbarLayer(nn.Module):
    """A crossbar twin as nodes of ai.mho.memristor: a Linear is a CrossbarLinear node; a
    convolution (conv1d, conv2d, depthwise conv1d) is one CrossbarConv node per core, each on
    its own channels (a group, or the depthwise channels its block-diagonal chip holds); a
    per-channel depthwise conv is one CrossbarConv node with depthwise = "per-channel"."""

    def __init__(self, twin: CrossbarLayer, name: str):
        super().__init__()
        self.kind = twin.kind
        quantizer = twin.output_quantizer
        self.output_quantizer = FakeQuant(quantizer.scale, quantizer.limit)
        if self.kind == "linear":
            self.cores = nn.ModuleList([ExportCrossbarCore(twin.cores[0], name, 0)])
            return
        layout = {}
        if self.kind == "depthwise_conv1d":
            kernel, stride, dilation = (twin.kernel,), (twin.stride,), (twin.dilation,)
            before, after = [twin.pad_before], [twin.pad_after]
            self.channels = list(twin.group_channels)
            if twin.layout == "per-channel":  # one node: the [C, K] chip, read per channel
                layout = {"depthwise": "per-channel"}
        else:  # conv2d, or conv1d (stored by the twin as 2-D with width 1)
            rank = 1 if self.kind == "conv1d" else 2
            kernel, stride = twin.kernel_size[:rank], twin.stride[:rank]
            dilation = twin.dilation[:rank]
            before, after = [p[0] for p in twin.pads[:rank]], [p[1] for p in twin.pads[:rank]]
            in_channels = twin.cores[0].in_features // math.prod(kernel)
            self.channels = [in_channels] * twin.groups
        self.cores = nn.ModuleList(
            ExportCrossbarCore(core, name, i, conv={
                "in_channels": channels, "kernel_shape": list(kernel), "strides": list(stride),
                "dilations": list(dilation), "pads": [*before, *after]} | layout)
            for i, (core, channels) in enumerate(zip(twin.cores, self.channels, strict=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., I] (linear) or [B, C, *S] (convolutions) -> the layer's quantized output."""
        if self.kind == "linear":
            return self.output_quantizer(self.cores[0](x))
        parts = x.split(self.channels, dim=1) if len(self.cores) > 1 else [x]
        y = torch.cat([core(part) for core, part in zip(self.cores, parts, strict=True)], 1)
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
    (log_probs [B, T', V], out_lengths [B]). The frame count is an integer floor division
    (`//` on integer tensors): Core ML keeps it int32 (mho.exporter.coreml patches the
    converter, which otherwise casts it to float and, in an FP16 program, loses a frame past
    2048 frames)."""

    def __init__(self, model: nn.Module, features: FeatureConfig | None = None):
        super().__init__()
        features = features or FeatureConfig()
        self.log_mel = LogMel(features)
        self.model = model
        self.features = features

    def forward(self, waveform: torch.Tensor, samples: torch.Tensor):
        frames = samples // self.features.shift_samples + 1  # FeatureConfig.num_frames
        return self.model(self.log_mel(waveform), frames)
