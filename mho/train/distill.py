"""Knowledge distillation: a trained Conformer's frame posteriors as extra, soft targets.

With ``[distill]`` in a training config, every step adds to the CTC loss the KL divergence
from a teacher's per-frame token distribution to the student's, averaged over the student's
valid frames:

    loss = CTC + weight * T^2 * mean_frames KL(softmax(z_teacher / T) || softmax(z_student / T))

(T: the temperature; T^2 keeps the gradient's scale as T changes, Hinton et al. 2015). CTC
alone says only which tokens follow each other; the teacher says, at every frame, which
token it hears and how sure it is, so a student learns much faster from it, and learns the
teacher's robustness to voices it was trained for (its augmentation, its log-mel front end).

The teacher is a Conformer (log-mel features in); the student may be a Conformer or a
wav2vec2-style model (waveform in), whose 20 ms frames each take the teacher's 40 ms frame
whose centre is nearest (`nearest_frames`). The teacher sees the clean input: before
SpecAugment (a Conformer student's features) or before the student's own time masking (a
waveform student's log-mels computed here), so masked frames still get the right targets.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from mho.data.features import FeatureConfig, LogMel
from mho.errors import ConfigError, MhoError
from mho.models.frontend import SUBSAMPLING, sequence_mask


@dataclass(frozen=True)
class DistillConfig:
    teacher: str  # a shipped model's name or a checkpoint path: a Conformer (features in)
    weight: float = 1.0  # of the KL term, added to the CTC loss
    temperature: float = 1.0  # softens both distributions; 1: as the models give them

    def __post_init__(self) -> None:
        if self.weight <= 0 or self.temperature <= 0:
            raise ConfigError(f"distill weight and temperature must be positive, got "
                              f"{self.weight} and {self.temperature}")


def frame_centres(model: torch.nn.Module, frames: int) -> torch.Tensor:
    """[frames] sample index of the centre of each of ``model``'s output frames (16 kHz).

    A Conformer's features are centred on samples 0, 160, 320, ... and its subsampling convs
    (kernel 3, stride 2, padding 1) centre output frame k on feature frame 4k: sample 640 k.
    A wav2vec2-style model's frame j sees samples [j hop, j hop + receptive field)."""
    index = torch.arange(frames, dtype=torch.float64)
    if model.input_kind == "features":
        return index * FeatureConfig().shift_samples * SUBSAMPLING
    config = model.config
    return index * config.hop_samples + config.receptive_field_samples / 2


def nearest_frames(student: torch.nn.Module, teacher: torch.nn.Module, student_frames: int,
                   teacher_frames: int) -> torch.Tensor:
    """[student_frames] int64: for each student frame, the teacher frame with the nearest
    centre (the earlier one on a tie), clipped to the teacher's frames."""
    centres = frame_centres(student, student_frames)
    teacher_hop = float(frame_centres(teacher, 2)[1])
    offset = float(frame_centres(teacher, 1)[0])
    nearest = torch.floor((centres - offset) / teacher_hop + 0.5 - 1e-9).long()
    return nearest.clamp(0, max(teacher_frames - 1, 0))


def distillation_loss(student_log_probs: torch.Tensor, student_lengths: torch.Tensor,
                      teacher_log_probs: torch.Tensor, temperature: float = 1.0
                      ) -> torch.Tensor:
    """Mean over the student's valid frames of T^2 KL(teacher || student) at temperature T.

    student_log_probs, teacher_log_probs: [B, T, V] log-probabilities on the same frames
    (the teacher's already mapped to the student's frames); student_lengths: [B]."""
    # log_softmax(log p / T) = log softmax(z / T): a log-softmax is a logit minus a constant
    student = torch.log_softmax(student_log_probs / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_log_probs / temperature, dim=-1)
    per_frame = (teacher.exp() * (teacher - student)).sum(dim=-1)  # [B, T]
    valid = sequence_mask(student_lengths.to(per_frame.device), per_frame.shape[1])
    return temperature**2 * per_frame[valid].mean()


class Distiller:
    """The teacher, frozen, and its targets for a student's batch."""

    def __init__(self, config: DistillConfig, student: torch.nn.Module,
                 device: torch.device) -> None:
        from mho.models.zoo import checkpoint_path, load_model

        path = checkpoint_path(config.teacher)
        if path is None or not path.exists():
            raise MhoError(f"distill teacher {config.teacher!r}: no shipped model or checkpoint "
                           "by that name")
        teacher, _ = load_model(Path(path))
        if teacher.input_kind != "features":
            raise MhoError(f"distill teacher {config.teacher!r} is a {teacher.input_kind} model; "
                           "the teacher must be a Conformer (log-mel features in)")
        if teacher.config.vocab_size != student.config.vocab_size:
            raise MhoError(f"distill teacher {config.teacher!r} has {teacher.config.vocab_size} "
                           f"tokens, the student {student.config.vocab_size}")
        self.config = config
        self.student = student
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.log_mel = LogMel().to(device)  # for waveform students

    @torch.no_grad()
    def teacher_log_probs(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The student's clean batch (features [B, T, 80] or waveforms [B, S], with their
        lengths [B]) -> the teacher's log-probabilities on its own frames [B, T', V]."""
        if self.student.input_kind == "waveform":
            features = self.log_mel(inputs)
            lengths = FeatureConfig().num_frames(lengths)
        else:
            features = inputs
        return self.teacher(features, lengths)[0]

    def loss(self, student_log_probs: torch.Tensor, student_lengths: torch.Tensor,
             teacher_log_probs: torch.Tensor) -> torch.Tensor:
        """The weighted term added to the CTC loss; student_log_probs [B, T, V] and the
        teacher's on its own frames [B, T', V]."""
        index = nearest_frames(self.student, self.teacher, student_log_probs.shape[1],
                               teacher_log_probs.shape[1])
        return self.config.weight * distillation_loss(
            student_log_probs, student_lengths, teacher_log_probs[:, index.to(
                teacher_log_probs.device)], self.config.temperature)
