"""Quantization-aware training: symmetric fake quantization around every static-weight matmul.

Each Linear, Conv1d (pointwise or depthwise) and Conv2d becomes a quantized twin that
keeps its float parameters and adds two activation observers:

    x --input observer--> x_q --(x_q W_q^T + bias)--> y --output observer--> y_q

Grids, all symmetric and per tensor, zero exactly representable:
- weights: s_w = max|W| / (2^(b-1) - 1), integer weights w = round(W / s_w) in
  [-(2^(b-1) - 1), 2^(b-1) - 1] (b = 8: +-127, b = 4: +-7, 15 values; -2^(b-1) is never used,
  so every weight has a magnitude of b-1 bits and a sign: the crossbar's bit planes).
- activations: s_x = absmax / 127 with levels -127..127 (255 levels). This is SynaptogenML's
  activation quantizer grid; the memristor DAC must use the same grid (level k -> k/127 of
  full-scale voltage) so that an ideal crossbar reproduces the QAT output exactly.

Activation observers track a running absmax: the first batch sets it, later training batches
move it by `momentum`; in eval mode it is frozen. Rounding uses a straight-through estimator:
the gradient passes unchanged inside the grid's range and is zero where values are clipped.

The memristor mapping reads, per layer (see `quantized_layers`): `kind`, `integer_weight()`,
`weight_scale`, `input_scale`, `output_scale`, `bias`, plus the usual conv attributes.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from mho.errors import ConfigError

MIN_SCALE = 1e-8  # keeps an all-zero tensor (or an observer that saw nothing) from dividing by 0


@dataclass(frozen=True)
class QuantConfig:
    weight_bits: int = 8  # 8 or 4 in the paper; integer weights in +-(2^(b-1) - 1)
    activation_bits: int = 8  # symmetric grid absmax / (2^(b-1) - 1): 255 levels at 8 bits
    momentum: float = 0.01  # weight of each training batch's absmax in the running absmax

    def __post_init__(self):
        for name in ("weight_bits", "activation_bits"):
            if not 2 <= getattr(self, name) <= 16:
                raise ConfigError(f"QuantConfig.{name} must be in 2..16, got {getattr(self, name)}")
        if not 0.0 < self.momentum <= 1.0:
            raise ConfigError(f"QuantConfig.momentum must be in (0, 1], got {self.momentum}")


def max_level(bits: int) -> int:
    """Largest integer of a symmetric b-bit grid: 127 for 8 bits, 7 for 4 bits."""
    return 2 ** (bits - 1) - 1


class _RoundWithStraightThrough(torch.autograd.Function):
    """round(clamp(x / scale)) * scale; gradient 1 inside the range, 0 where clipped.

    A custom Function rather than ``x + (q - x).detach()`` because that sum is not exactly q
    in floating point, and the integer weights times the scale must equal the fake-quantized
    weights bit for bit.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, limit: int) -> torch.Tensor:
        levels = x / scale
        quantized = torch.clamp(levels, -limit, limit).round_().mul_(scale)
        ctx.save_for_backward(levels.abs_() <= limit)  # in place: one temporary fewer
        return quantized

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad_output * inside, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, limit: int) -> torch.Tensor:
    """x on the grid scale * {-limit, ..., limit} (round half to even), with STE gradient."""
    return _RoundWithStraightThrough.apply(x, scale, limit)


def integer_levels(x: torch.Tensor, scale: torch.Tensor, limit: int) -> torch.Tensor:
    """The integers that `fake_quantize` multiplies by `scale`: same division, same rounding."""
    return torch.round(torch.clamp(x / scale, -limit, limit)).to(torch.int32)


class ActivationObserver(nn.Module):
    """Running absmax of a tensor, and fake quantization of it on the absmax / 127 grid."""

    def __init__(self, bits: int = 8, momentum: float = 0.01):
        super().__init__()
        self.bits = bits
        self.momentum = momentum
        self.calibrating = False  # update the absmax in eval mode too (see `calibrate`)
        self.register_buffer("absmax", torch.zeros(()))  # 0 until the first batch is observed

    @property
    def limit(self) -> int:
        return max_level(self.bits)

    def scale_tensor(self) -> torch.Tensor:
        return torch.clamp(self.absmax / self.limit, min=MIN_SCALE)  # []

    @property
    def scale(self) -> float:
        return float(self.scale_tensor())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.calibrating:
            low, high = torch.aminmax(x.detach())  # one pass, no |x| temporary
            batch_absmax = torch.maximum(-low, high).to(self.absmax.dtype)
            averaged = (1 - self.momentum) * self.absmax + self.momentum * batch_absmax
            self.absmax.copy_(torch.where(self.absmax > 0, averaged, batch_absmax))
        return fake_quantize(x, self.scale_tensor(), self.limit)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, absmax={float(self.absmax):.4g}"


class QuantLayer:
    """What the quantized twins share; mixed into subclasses of nn.Linear / nn.Conv*d.

    They stay instances of their float class (same `weight` and `bias` parameters, same
    state-dict keys), with `input_observer` and `output_observer` added.
    """

    kind: str  # "linear", "conv1d", "depthwise_conv1d" or "conv2d"
    weight: nn.Parameter
    bias: nn.Parameter | None

    def _add_observers(self, config: QuantConfig) -> None:
        self.quant_config = config
        self.input_observer = ActivationObserver(config.activation_bits, config.momentum)
        self.output_observer = ActivationObserver(config.activation_bits, config.momentum)

    @property
    def weight_bits(self) -> int:
        return self.quant_config.weight_bits

    @property
    def weight_limit(self) -> int:
        return max_level(self.quant_config.weight_bits)

    def weight_scale_tensor(self) -> torch.Tensor:
        """max|W| / (2^(b-1) - 1), from the current weights (no gradient through it)."""
        return torch.clamp(self.weight.detach().abs().amax() / self.weight_limit, min=MIN_SCALE)

    @property
    def weight_scale(self) -> float:
        return float(self.weight_scale_tensor())

    @property
    def input_scale(self) -> float:
        return self.input_observer.scale

    @property
    def output_scale(self) -> float:
        return self.output_observer.scale

    def integer_weight(self) -> torch.Tensor:
        """int32, same shape as `weight`; times `weight_scale` it is the weight QAT uses."""
        return integer_levels(self.weight.detach(), self.weight_scale_tensor(), self.weight_limit)

    def fake_quantized_weight(self) -> torch.Tensor:
        return fake_quantize(self.weight, self.weight_scale_tensor(), self.weight_limit)


class QuantLinear(QuantLayer, nn.Linear):
    kind = "linear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_observer(x)
        y = nn.functional.linear(x, self.fake_quantized_weight(), self.bias)
        return self.output_observer(y)


class QuantConv1d(QuantLayer, nn.Conv1d):
    @property
    def kind(self) -> str:
        is_depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels
        return "depthwise_conv1d" if is_depthwise else "conv1d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_observer(x)
        y = self._conv_forward(x, self.fake_quantized_weight(), self.bias)
        return self.output_observer(y)


class QuantConv2d(QuantLayer, nn.Conv2d):
    kind = "conv2d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_observer(x)
        y = self._conv_forward(x, self.fake_quantized_weight(), self.bias)
        return self.output_observer(y)


def _quantized_twin(module: nn.Module, config: QuantConfig) -> nn.Module:
    """A quantized copy of a Linear / Conv that shares the original's parameter objects
    (an optimizer built before the swap keeps training them)."""
    if isinstance(module, nn.Linear):
        twin = QuantLinear(module.in_features, module.out_features, bias=module.bias is not None)
    elif isinstance(module, nn.Conv1d | nn.Conv2d):
        conv_class = QuantConv1d if isinstance(module, nn.Conv1d) else QuantConv2d
        twin = conv_class(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    else:
        raise TypeError(f"no quantized version of {type(module).__name__}")
    twin.weight = module.weight
    twin.bias = module.bias
    twin._add_observers(config)
    twin.to(module.weight.device)
    return twin.train(module.training)


def enable_quantization(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Swap every Linear, Conv1d and Conv2d inside `model` for its quantized twin, in place.

    Weights are kept, so a float model can be fine-tuned with QAT. Already quantized layers
    are left alone. Returns `model`.
    """
    swappable = (nn.Linear, nn.Conv1d, nn.Conv2d)
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, swappable) and not isinstance(module, QuantLayer)
    ]
    for name in targets:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child_name, _quantized_twin(getattr(parent, child_name), config))
    return model


def quantize(model: nn.Module, config: QuantConfig = QuantConfig()) -> nn.Module:
    """Prepare any model for QAT or calibration, in place: every nn.MultiheadAttention becomes
    its Linear twin (mho.models.mha, so its in-projection can be quantized too), then every
    Linear, Conv1d and Conv2d its quantized twin. Models with their own
    `enable_quantization` (mho's Conformer) use it, so their config records the setting.
    Returns `model`; then `calibrate` it or fine-tune it."""
    from mho.models.mha import LinearMultiheadAttention

    if quantized_layers(model):
        raise ConfigError("model is already quantized")
    own = getattr(model, "enable_quantization", None)
    if callable(own):
        return own(config=config)
    attention = [name for name, m in model.named_modules()
                 if isinstance(m, nn.MultiheadAttention)]
    for name in attention:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child_name, LinearMultiheadAttention.from_torch(getattr(parent,
                                                                                child_name)))
    enable_quantization(model, config)
    if not quantized_layers(model):
        raise ConfigError(f"{type(model).__name__} has no Linear, Conv1d or Conv2d layer to "
                          f"quantize")
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """Every quantized layer by module name (e.g. "blocks.0.attention.linear_pos"), in
    definition order: what the memristor mapping iterates over."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLayer)}


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor | tuple | list]) -> None:
    """Run `model(*batch)` (a tensor batch: `model(batch)`) in eval mode (no dropout) while
    every observer updates its running absmax: post-training calibration, or a warm start
    before QAT fine-tuning."""
    observers = [m for m in model.modules() if isinstance(m, ActivationObserver)]
    if not observers:
        raise ConfigError("model has no quantized layers to calibrate: quantize it first "
                          "(mho.quantize)")
    was_training = model.training
    model.eval()
    try:
        for observer in observers:
            observer.calibrating = True
        for index, batch in enumerate(batches):
            if isinstance(batch, torch.Tensor):
                batch = (batch,)
            elif not isinstance(batch, tuple | list):
                raise ConfigError(f"calibration batch {index} is a {type(batch).__name__}: "
                                  f"give tensors or tuples of the model's inputs")
            model(*batch)
    finally:
        for observer in observers:
            observer.calibrating = False
        model.train(was_training)
