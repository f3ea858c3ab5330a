"""Crossbar twins of QAT layers: Linear, depthwise Conv1d, Conv1d and Conv2d, each a composition
of one or more `CrossbarLinear` cores followed by QAT's output fake quantization.

    x --[unfold]--> columns [..., I] --CrossbarLinear core(s)--> y --output quantizer--> y_q

The DAC of each core quantizes on the QAT input observer's grid, so the input observer needs
no twin; the output observer's grid is copied (frozen), so a twin is a drop-in replacement of
its QAT module: with an ideal chip it gives QAT's output up to float rounding.

Convolutions run as matmuls over unfolded inputs (im2col): the weight [O, I/g, *kernel] becomes
per group g a matrix [O/g, I/g * prod(kernel)] whose column order matches `unfold`.

Depthwise Conv1d (C channels, kernel K, one filter per channel) has two layouts
(`DEPTHWISE_LAYOUTS` in config.py). "per-channel" (the default, the paper's): the [C, K] tap
matrix on one chip, channel c's taps in column c, and column c reads only its own K cells
driven by channel c's window (`PerChannelCrossbar`). "block-diagonal": a matrix where the
unfolded input has channel-major rows (c * K + k), channel c's output column holds its K taps
in rows c K .. c K + K - 1 and zeros elsewhere. Channels are cut into groups of `tile_cols`;
each group is one core of [g, g K], i.e. exactly one column of tiles, so no tile of the layer
is all zeros. Every row feeds exactly one output, so a tile can never hold more than
`tile_rows` weights and ceil(C K / tile_rows) tiles per plane and polarity is the minimum for a
layout that reads one time step per conversion; channel-major rows reach it (a channel may
straddle two row tiles: two partial sums, added digitally like any split column). See
docs/simulator.md for the alternatives and cell counts.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from mho.errors import ConfigError
from mho.models.quant import ActivationObserver, fake_quantize
from mho.simulator.crossbar import ClipStats, CrossbarConfig, CrossbarLinear, PerChannelCrossbar
from mho.simulator.device import DeviceConfig, ProgrammedChip


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from `seed` and keys (layer name, chip index): independent streams per
    layer, stable across runs and Python versions (no hash randomization)."""
    text = "\x1f".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class OutputQuantizer(nn.Module):
    """QAT's output observer frozen in eval mode: y -> y on the grid absmax / (2^(b-1) - 1)."""

    def __init__(self, observer: ActivationObserver):
        super().__init__()
        self.limit = observer.limit
        self.register_buffer("scale", observer.scale_tensor().detach().clone())  # []

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return fake_quantize(y, self.scale, self.limit)


def _check_calibrated(layer) -> None:
    for observer in (layer.input_observer, layer.output_observer):
        if not float(observer.absmax) > 0:
            raise ConfigError(
                "a QAT layer's observers have seen no data: calibrate the model "
                "(mho.models.calibrate) before mapping it onto crossbars"
            )


class CrossbarLayer(nn.Module):
    """Base of the twins: `cores` (one CrossbarLinear per weight matrix) + output quantizer.

    Subclasses define `weight_matrices(layer, config)` (what to program) and `forward`."""

    kind: str = ""
    core_class: type[CrossbarLinear] = CrossbarLinear  # what each core's chip is read by

    def __init__(self, layer, cores: Sequence[CrossbarLinear]):
        super().__init__()
        self.cores = nn.ModuleList(cores)
        self.output_quantizer = OutputQuantizer(layer.output_observer)

    @staticmethod
    def weight_matrices(layer, config: CrossbarConfig) -> list[torch.Tensor]:
        """Integer matrices [O_g, I_g] to program, one per core; outputs of the cores,
        concatenated, are the layer's outputs in order."""
        raise NotImplementedError

    @staticmethod
    def core_biases(layer, matrices: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        """The float bias of each core: the layer's bias cut like its outputs."""
        if layer.bias is None:
            return [None] * len(matrices)
        return list(layer.bias.detach().split([m.shape[0] for m in matrices]))

    @classmethod
    def from_quant(
        cls,
        layer,
        *,
        config: CrossbarConfig | None = None,  # None: CrossbarConfig()
        device: DeviceConfig | None = None,  # None: the measured device
        seed: int = 0,
    ) -> "CrossbarLayer":
        """Program a QAT layer; core i is programmed with derive_seed(seed, i) and reads noise
        from derive_seed(config.noise_seed, i)."""
        if layer.kind != cls.kind:
            raise ConfigError(f"{cls.__name__} maps {cls.kind} layers, got a {layer.kind}")
        _check_calibrated(layer)
        config = config or CrossbarConfig()
        matrices = cls.weight_matrices(layer, config)
        biases = cls.core_biases(layer, matrices)
        cores = [
            cls.core_class.from_integer(
                matrix,
                layer.weight_bits,
                layer.weight_scale,
                layer.input_scale,
                bias,
                config=replace(config, noise_seed=derive_seed(config.noise_seed, i)),
                device=device,
                seed=derive_seed(seed, i),
            )
            for i, (matrix, bias) in enumerate(zip(matrices, biases, strict=True))
        ]
        return cls(layer, cores)

    @classmethod
    def from_chips(
        cls, layer, chips: Sequence[ProgrammedChip], config: CrossbarConfig
    ) -> "CrossbarLayer":
        """Wrap already programmed chips (e.g. loaded from a file) for this QAT layer."""
        _check_calibrated(layer)
        matrices = cls.weight_matrices(layer, config)
        if len(chips) != len(matrices):
            raise ConfigError(f"layer needs {len(matrices)} chips, got {len(chips)}")
        for chip, matrix in zip(chips, matrices, strict=True):
            if (chip.out_features, chip.in_features) != tuple(matrix.shape) or (
                chip.weight_bits != layer.weight_bits
            ):
                raise ConfigError(
                    f"chip holds [{chip.out_features}, {chip.in_features}] {chip.weight_bits}-bit "
                    f"weights, the layer needs {list(matrix.shape)} {layer.weight_bits}-bit"
                )
        biases = cls.core_biases(layer, matrices)
        cores = [
            cls.core_class(
                chip,
                layer.weight_scale,
                layer.input_scale,
                bias,
                replace(config, noise_seed=derive_seed(config.noise_seed, i)),
            )
            for i, (chip, bias) in enumerate(zip(chips, biases, strict=True))
        ]
        return cls(layer, cores)

    @property
    def chips(self) -> tuple[ProgrammedChip, ...]:
        return tuple(core.chip for core in self.cores)

    @property
    def tiles(self) -> int:
        """Crossbar tiles per bit plane and polarity."""
        return sum(chip.tiles[0] * chip.tiles[1] for chip in self.chips)

    def clip_stats(self) -> tuple[ClipStats, ...]:
        """One ClipStats (per tile) per core, since the last reset."""
        return tuple(core.clip_stats() for core in self.cores)

    def reset_clip_stats(self) -> None:
        for core in self.cores:
            core.reset_clip_stats()

    def reseed(self, seed: int) -> None:
        """Restart every core's read-noise stream from a seed derived from `seed`."""
        for i, core in enumerate(self.cores):
            core.reseed(derive_seed(seed, i))


class CrossbarQuantLinear(CrossbarLayer):
    """A QuantLinear on one crossbar core: [..., I] -> [..., O]."""

    kind = "linear"

    @staticmethod
    def weight_matrices(layer, config: CrossbarConfig) -> list[torch.Tensor]:
        return [layer.integer_weight()]  # [O, I]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(self.cores[0](x))


def _padding(module, kernel: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) zero padding per spatial dim, from a conv's int / tuple / string padding."""
    if module.padding_mode != "zeros":
        raise ConfigError(f"crossbar convolutions pad with zeros, not {module.padding_mode!r}")
    if module.padding == "valid":
        return [(0, 0)] * len(kernel)
    if module.padding == "same":  # as torch: the extra odd pad goes after
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in module.padding]


class CrossbarConv2d(CrossbarLayer):
    """A QuantConv2d as im2col + one core per group: [B, C_in, H, W] -> [B, C_out, H', W']."""

    kind = "conv2d"

    def __init__(self, layer, cores: Sequence[CrossbarLinear]):
        super().__init__(layer, cores)
        self.kernel_size = tuple(layer.kernel_size)
        self.stride = tuple(layer.stride)
        self.dilation = tuple(layer.dilation)
        self.pads = _padding(layer, self.kernel_size, self.dilation)
        self.groups = layer.groups
        self.out_channels = layer.out_channels

    @staticmethod
    def weight_matrices(layer, config: CrossbarConfig) -> list[torch.Tensor]:
        weight = layer.integer_weight()  # [O, I/g, *kernel]
        # flattened (channel, *kernel): the row order of `unfold`'s columns
        return [w.reshape(w.shape[0], -1) for w in weight.chunk(layer.groups)]

    def _columns(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """[B, C, H, W] -> (im2col columns [B, L, C kh kw], output (H', W'))."""
        (top, bottom), (left, right) = self.pads
        x = nn.functional.pad(x, (left, right, top, bottom))  # zeros: DAC level 0, 0 V
        size = [
            (n - d * (k - 1) - 1) // s + 1
            for n, k, d, s in zip(
                x.shape[2:], self.kernel_size, self.dilation, self.stride, strict=True
            )
        ]
        columns = nn.functional.unfold(
            x, self.kernel_size, dilation=self.dilation, stride=self.stride
        )  # [B, C kh kw, L]
        return columns.transpose(1, 2), (size[0], size[1])

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H', W'] before the output quantizer."""
        columns, (height, width) = self._columns(x)  # [B, L, C_in kh kw]
        per_group = columns.chunk(self.groups, dim=-1)  # groups see their own channels
        y = torch.cat([core(c) for core, c in zip(self.cores, per_group, strict=True)], -1)
        return y.transpose(1, 2).reshape(x.shape[0], self.out_channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(self._convolve(x))


class CrossbarConv1d(CrossbarConv2d):
    """A (non-depthwise) QuantConv1d as a Conv2d with width 1: [B, C_in, T] -> [B, C_out, T']."""

    kind = "conv1d"

    def __init__(self, layer, cores: Sequence[CrossbarLinear]):
        super().__init__(layer, cores)
        self.kernel_size, self.stride = self.kernel_size + (1,), self.stride + (1,)
        self.dilation, self.pads = self.dilation + (1,), self.pads + [(0, 0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(self._convolve(x[..., None])[..., 0])


class CrossbarDepthwiseConv1d(CrossbarLayer):
    """A depthwise QuantConv1d (groups = C_in = C_out) as block-diagonal crossbar matrices over
    channel-major unfolded inputs; [B, C, T] -> [B, C, T']. Channel groups of `tile_cols`, one
    core each (see the module docstring)."""

    kind = "depthwise_conv1d"
    layout = "block-diagonal"

    def __init__(self, layer, cores: Sequence[CrossbarLinear]):
        super().__init__(layer, cores)
        self.kernel = layer.kernel_size[0]
        self.stride, self.dilation = layer.stride[0], layer.dilation[0]
        ((self.pad_before, self.pad_after),) = _padding(layer, (self.kernel,), (self.dilation,))
        self.group_channels = [core.out_features for core in cores]

    @staticmethod
    def weight_matrices(layer, config: CrossbarConfig) -> list[torch.Tensor]:
        weight = layer.integer_weight()[:, 0]  # [C, K]
        channels, kernel = weight.shape
        per_core = config.tile_cols  # one column of tiles per core: no all-zero tile
        matrices = []
        for start in range(0, channels, per_core):
            taps = weight[start : start + per_core]  # [g, K]
            count = taps.shape[0]
            matrix = torch.zeros(count, count, kernel, dtype=weight.dtype)  # [g, g, K]
            index = torch.arange(count)
            matrix[index, index] = taps  # channel j's taps in its own rows j K .. j K + K - 1
            matrices.append(matrix.reshape(count, count * kernel))  # [g, g K]
        return matrices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        span = self.dilation * (self.kernel - 1) + 1
        x = nn.functional.pad(x, (self.pad_before, self.pad_after))  # [B, C, T + pads]
        windows = x.unfold(2, span, self.stride)[..., :: self.dilation]  # [B, C, T', K] view
        batch, channels, frames, kernel = windows.shape
        columns = windows.permute(0, 2, 1, 3).reshape(batch, frames, channels * kernel)
        outputs, start = [], 0
        for core, count in zip(self.cores, self.group_channels, strict=True):
            outputs.append(core(columns[..., start * kernel : (start + count) * kernel]))
            start += count
        y = torch.cat(outputs, dim=-1).transpose(1, 2)  # [B, C, T']
        return self.output_quantizer(y)


class CrossbarPerChannelConv1d(CrossbarDepthwiseConv1d):
    """A depthwise QuantConv1d with every channel's K taps on its own column, read from its
    own K cells only (`PerChannelCrossbar`): one core holding the [C, K] tap matrix;
    [B, C, T] -> [B, C, T']."""

    layout = "per-channel"
    core_class = PerChannelCrossbar

    @staticmethod
    def weight_matrices(layer, config: CrossbarConfig) -> list[torch.Tensor]:
        return [layer.integer_weight()[:, 0]]  # [C, K]: channel c's taps in column c

    @property
    def tiles(self) -> int:
        """Tiles per plane and polarity as row-gated tiles: floor(R / K) channels on each
        tile's diagonal (one channel per tile column when K > R, over ceil(K / R) tiles)."""
        rows, columns = self.cores[0].config.tile_rows, self.cores[0].config.tile_cols
        per_tile = min(columns, max(1, rows // self.kernel))
        return -(-self.cores[0].channels // per_tile) * -(-self.kernel // rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        span = self.dilation * (self.kernel - 1) + 1
        x = nn.functional.pad(x, (self.pad_before, self.pad_after))  # [B, C, T + pads]
        windows = x.unfold(2, span, self.stride)[..., :: self.dilation]  # [B, C, T', K] view
        y = self.cores[0](windows.transpose(1, 2))  # [B, T', C]
        return self.output_quantizer(y.transpose(1, 2))  # [B, C, T']


TWINS: dict[str, type[CrossbarLayer]] = {
    twin.kind: twin
    for twin in (CrossbarQuantLinear, CrossbarConv1d, CrossbarConv2d, CrossbarPerChannelConv1d)
}
DEPTHWISE_TWINS: dict[str, type[CrossbarLayer]] = {
    twin.layout: twin for twin in (CrossbarPerChannelConv1d, CrossbarDepthwiseConv1d)
}


def twin_class(kind: str, depthwise: str = "per-channel") -> type[CrossbarLayer]:
    """The twin of a QAT layer kind; `depthwise` picks the layout of a depthwise conv."""
    if kind == "depthwise_conv1d":
        if depthwise not in DEPTHWISE_TWINS:
            raise ConfigError(f"unknown depthwise layout {depthwise!r}")
        return DEPTHWISE_TWINS[depthwise]
    if kind not in TWINS:
        raise ConfigError(f"no crossbar mapping for {kind} layers")
    return TWINS[kind]


def crossbar_twin(
    layer,
    *,
    config: CrossbarConfig | None = None,  # None: CrossbarConfig()
    device: DeviceConfig | None = None,  # None: the measured device
    seed: int = 0,
    depthwise: str = "per-channel",  # layout of a depthwise conv (config.DEPTHWISE_LAYOUTS)
) -> CrossbarLayer:
    """The crossbar twin of any QAT layer (by its `kind`), freshly programmed."""
    cls = twin_class(layer.kind, depthwise)
    return cls.from_quant(layer, config=config, device=device, seed=seed)
