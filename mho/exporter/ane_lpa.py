"""An LPA formulation for Core ML's Neural Engine: content windows without cumsum or gathers.

    twin = ane_twin(model)   # every PulseAccumulator (eval mode) as an AnePulseAccumulator,
                             # every Conformer attention's rel-shift without its gather

The torch module (mho.models.lpa) reads a content window [t - a, t + 1 + b) as the difference
of two prefix sums gathered at run-time indices: a cumsum and a gather per layer, both ops the
Neural Engine does not run (mho.exporter.coreml.OFF_NEURAL_ENGINE). In hard mode (eval: whole
frame extents 0 <= a, b <= M = max_extent) the same window sum is a sum over the 2M + 1 fixed
offsets o = -M .. M of shifted copies of v, each taken or not by a comparison:

    sum_{s in window_p(t)} v_s = sum_o [a_p(t) >= -o] [b_p(t) >= o] v_{t+o}

and the pulse mix contracts over pulses first, so only one coefficient per offset remains:

    mixed(t) = sum_o c(t, o) v_{t+o},   c(t, o) = sum_p w_p(t) / (n_p(t) + eps) [o in window_p(t)]

with n_p(t) the valid frames in the window. Every shift is a pad by M frames and a slice at
constant offsets (slice ends counted from the end, so no run-time shape is read): pads, slices,
comparisons, multiplies and adds, O(T M d) work, as the prefix-sum form is O(T P d). Frames past
either end are the pad's zeros, so the clamping of the window to [0, T) comes for free. Equal
to the torch module in hard mode up to float rounding (tests/exporter/test_ane_lpa.py); the
periodic and position-basis families are the torch module's own (matmuls, cos, comparisons).
"""

import torch
from torch import nn

from mho.models.attention import RelPosSelfAttention
from mho.models.lpa import EPSILON, PulseAccumulator
from mho.models.positional import rel_shift_by_reshape


class AnePulseAccumulator(PulseAccumulator):
    """A PulseAccumulator whose hard-mode content windows are shifted copies (see module
    docstring); in training mode it is the torch module unchanged."""

    def _content_mix(self, x, value, valid, weights) -> torch.Tensor:
        """x [B, T, D], value [B, H, T, d] (padding zeroed), valid [B, T], weights
        [B, H, T, Pc] -> [B, H, T, d]."""
        if self.training:
            return super()._content_mix(x, value, valid, weights)
        batch, heads, num_frames, head_dim = value.shape
        pulses, reach = self.cfg.content_pulses, self.cfg.max_extent
        context = self.extent_conv((x * valid[..., None]).transpose(1, 2)).transpose(1, 2)
        extents = (reach * torch.sigmoid(self.extent(context))).round()  # [B, T, H*Pc*2]
        extents = extents.reshape(batch, num_frames, heads, pulses, 2).permute(0, 2, 1, 3, 4)
        offsets = torch.arange(-reach, reach + 1, dtype=x.dtype, device=x.device)  # [O]
        # [o in window_p(t)]: [B, H, T, Pc, O], 1.0 or 0.0 (whole numbers, exact in FP16)
        inside = ((extents[..., :1] >= -offsets) & (extents[..., 1:] >= offsets)).to(x.dtype)
        shifted_valid = _shifted(valid[:, None, :, None], reach)  # [B, 1, T, 1, O]
        counts = (inside * shifted_valid).sum(dim=-1)  # [B, H, T, Pc]
        coefficients = weights / (counts + EPSILON)  # [B, H, T, Pc]
        per_offset = (coefficients[..., None] * inside).sum(dim=3)  # [B, H, T, O]
        padded = nn.functional.pad(value, (0, 0, reach, reach))  # [B, H, T + 2M, d]
        mixed = per_offset[..., :1] * padded[:, :, :-2 * reach]  # offset -M
        for k in range(1, 2 * reach + 1):
            end = k - 2 * reach  # counted from the end: no run-time length
            rows = padded[:, :, k:end] if end else padded[:, :, k:]
            mixed = mixed + per_offset[..., k:k + 1] * rows
        return mixed


def _shifted(x: torch.Tensor, reach: int) -> torch.Tensor:
    """x [B, 1, T, 1] -> [B, 1, T, 1, 2 reach + 1]: x_{t+o} for o = -reach .. reach, zero
    past either end."""
    padded = nn.functional.pad(x, (0, 0, reach, reach))  # [B, 1, T + 2 reach, 1]
    copies = [padded[:, :, k:k - 2 * reach] if k < 2 * reach else padded[:, :, k:]
              for k in range(2 * reach + 1)]
    return torch.stack(copies, dim=-1)


def ane_twin(model: nn.Module) -> nn.Module:
    """`model` with each PulseAccumulator (itself included) turned, in place, into an
    AnePulseAccumulator (the same parameters and buffers, the ANE content windows), and each
    Conformer relative-position attention's rel-shift done by pad and reshape instead of a
    gather (mho.models.positional.rel_shift_by_reshape: the same values). Returns `model`;
    deep-copy it first to keep the original."""
    for module in model.modules():
        if type(module) is PulseAccumulator:
            module.__class__ = AnePulseAccumulator
        elif isinstance(module, RelPosSelfAttention):
            module.rel_shift = rel_shift_by_reshape
    return model
