"""Statistics over the valid entries of padded tensors."""

import torch


def masked_moments(x: torch.Tensor, valid: torch.Tensor, dim: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and variance of x over its valid entries along `dim` (kept), and x - mean with
    padding zeroed. Ratios of means, never a sum divided by a count: a count of samples
    (95,000 in 6 s) is infinite in FP16, as Core ML programs run."""
    share = valid.mean(dim, keepdim=True).clamp(min=1e-6)  # valid fraction of the axis
    mean = (x * valid).mean(dim, keepdim=True) / share
    centred = (x - mean) * valid
    return mean, centred, (centred**2).mean(dim, keepdim=True) / share


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last axis, written out: coremltools converts torch.log_softmax
    to log(softmax + 1e-45), which in FP16 floors every log-prob below -16.6 at -103."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
