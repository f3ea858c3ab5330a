"""Knowledge distillation: the loss against a naive loop, frame centres against the models'
receptive fields, and a distilled student that ends nearer its teacher than a plain one."""

import math

import pytest
import torch

from mho.errors import ConfigError, MhoError
from mho.models.conformer import ConformerCTC, conformer_config
from mho.models.transformer import Wav2Vec2CTC, wav2vec2_config
from mho.train.config import apply_overrides
from mho.train.distill import (
    DistillConfig,
    Distiller,
    distillation_loss,
    frame_centres,
    nearest_frames,
)
from mho.train.trainer import CHECKPOINT, Trainer
from tests.train.conftest import tiny_config


def test_loss_is_the_mean_kl_over_valid_frames():
    generator = torch.Generator().manual_seed(0)
    student = torch.log_softmax(torch.randn(2, 5, 7, generator=generator), -1)
    teacher = torch.log_softmax(3 * torch.randn(2, 5, 7, generator=generator), -1)
    lengths = torch.tensor([5, 3])
    temperature = 2.0
    terms = []
    for b in range(2):
        for t in range(int(lengths[b])):  # padding frames (b=1, t>=3) never count
            p = [math.exp(v / temperature) for v in teacher[b, t].tolist()]
            q = [math.exp(v / temperature) for v in student[b, t].tolist()]
            p = [x / sum(p) for x in p]
            q = [x / sum(q) for x in q]
            terms.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)))
    expected = temperature**2 * sum(terms) / len(terms)
    got = distillation_loss(student, lengths, teacher, temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)  # float32 sums of 7 terms
    assert distillation_loss(teacher, lengths, teacher).item() == pytest.approx(0, abs=1e-6)


def receptive_field_centre(module, inputs: torch.Tensor, frame: int, *args) -> float:
    """Midpoint of the input positions (axis 1) that output ``frame`` depends on."""
    inputs = inputs.clone().requires_grad_(True)
    out = module(inputs, *args)[0]
    out[:, frame].abs().sum().backward()
    touched = inputs.grad.abs().flatten(2).sum(-1)[0].nonzero().flatten()
    return (touched.min().item() + touched.max().item()) / 2


def test_frame_centres_are_the_receptive_fields_midpoints():
    torch.manual_seed(0)
    conformer = ConformerCTC(conformer_config("tiny")).eval()
    features = torch.randn(1, 41, 80)
    for k in (0, 3, 7):  # feature frame i is centred on sample 160 i
        centre = receptive_field_centre(conformer.frontend, features, k, torch.tensor([41]))
        if k > 0:  # frame 0's field is cut by the padding on the left
            assert 160 * centre == frame_centres(conformer, k + 1)[k].item()

    wav2vec2 = Wav2Vec2CTC(wav2vec2_config("tiny")).eval()
    waveform = torch.randn(1, 16_000)[..., None]  # [B, S, 1]: the helper reads axis 1
    encoder = lambda x, lengths: (wav2vec2.encoder(x[..., 0], lengths),)  # noqa: E731
    for j in (0, 5, 20):  # the field's sample positions [first, last]: midpoint + 1/2
        centre = receptive_field_centre(encoder, waveform, j, torch.tensor([16_000]))
        assert centre + 0.5 == frame_centres(wav2vec2, j + 1)[j].item()


def test_nearest_frames_against_brute_force():
    conformer = ConformerCTC(conformer_config("tiny"))
    wav2vec2 = Wav2Vec2CTC(wav2vec2_config("tiny"))
    student = frame_centres(wav2vec2, 50)
    teacher = frame_centres(conformer, 25)
    brute = [min(range(25), key=lambda k: (abs(s - teacher[k]), k)) for s in student.tolist()]
    assert nearest_frames(wav2vec2, conformer, 50, 25).tolist() == brute
    assert nearest_frames(wav2vec2, conformer, 50, 10).max().item() == 9  # clipped
    assert nearest_frames(conformer, conformer, 25, 25).tolist() == list(range(25))


def test_teacher_must_exist_and_be_a_conformer(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="positive"):
        DistillConfig("x", weight=0)
    # the recipe's DISTILL=...: a --set over a config without the table
    overridden = apply_overrides(tiny_config(tiny_corpus), ['distill.teacher="m"'])
    assert overridden.distill == DistillConfig("m")
    missing = tiny_config(tiny_corpus, distill=DistillConfig(str(tmp_path / "none.pt")))
    with pytest.raises(MhoError, match="no shipped model or checkpoint"):
        Trainer(missing, tmp_path / "run", progress=False)  # before any data loads
    Trainer(tiny_config(tiny_corpus, family="wav2vec2", epochs=1), tmp_path / "w2v",
            progress=False).fit()
    wrong = tiny_config(tiny_corpus, distill=DistillConfig(str(tmp_path / "w2v" / CHECKPOINT)))
    with pytest.raises(MhoError, match="must be a Conformer"):
        Trainer(wrong, tmp_path / "run", progress=False)


def kl_to_teacher(run: Trainer, distiller: Distiller) -> float:
    """The unweighted KL (T = 1) from the teacher to ``run``'s model over its train set."""
    run.model.eval()
    batch = run.train_set.collate(list(range(len(run.train_set))))
    with torch.no_grad():
        log_probs, lengths = run.model(batch["inputs"], batch["lengths"])
        teacher = distiller.teacher_log_probs(batch["inputs"], batch["lengths"])
        return distiller.loss(log_probs, lengths, teacher).item() / distiller.config.weight


def test_a_distilled_waveform_student_ends_nearer_its_teacher(tiny_corpus, tmp_path):
    """The same student, seed and steps, with and without the teacher's targets: the distilled
    one's posteriors are nearer the teacher's (a wrong sign, frame map or input would not be)."""
    Trainer(tiny_config(tiny_corpus, epochs=4), tmp_path / "teacher", progress=False).fit()
    distill = DistillConfig(str(tmp_path / "teacher" / CHECKPOINT), weight=10.0)
    runs = {}
    for name, config in (("plain", None), ("distilled", distill)):
        run = Trainer(tiny_config(tiny_corpus, family="wav2vec2", epochs=8, distill=config),
                      tmp_path / name, progress=False)
        run.fit()
        runs[name] = run
    distiller = runs["distilled"].distiller
    kl = {name: kl_to_teacher(run, distiller) for name, run in runs.items()}
    assert kl["distilled"] < kl["plain"]

    # the step's loss is the CTC loss plus the weighted KL on the clean input's teacher
    # targets (no dropout or masking here, so the student's forward is repeatable)
    quiet = {"dropout": 0.0, "attention_dropout": 0.0, "mask_time_prob": 0.0}
    run = Trainer(tiny_config(tiny_corpus, family="wav2vec2", model=quiet, distill=distill),
                  tmp_path / "exact", progress=False)
    run.load_data()
    batch = run.train_set.collate([0, 1])
    with torch.no_grad():
        log_probs, lengths = run.model.train()(batch["inputs"], batch["lengths"])
        ctc = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), batch["labels"], lengths, batch["label_lengths"],
            blank=0, reduction="mean", zero_infinity=True)
        teacher = run.distiller.teacher_log_probs(batch["inputs"], batch["lengths"])
        kl = distillation_loss(log_probs, lengths, teacher[:, nearest_frames(
            run.model, run.distiller.teacher, log_probs.shape[1], teacher.shape[1])])
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda step: 1.0)
    assert run.step(batch, seed=0) == pytest.approx((ctc + 10.0 * kl).item(), rel=1e-6)
