"""Training: length-bucketed batches, SpecAugment, schedules, checkpoints, the loop."""
