"""Learning-rate schedule: linear warm-up to the peak, then linear decay to a floor."""

import torch


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_fraction: float,
    final_fraction: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LR multiplier rises 0 -> 1 over the warm-up, then falls 1 -> ``final_fraction``."""
    warmup = max(1, round(total_steps * warmup_fraction))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay)
        return 1.0 - (1.0 - final_fraction) * progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
