"""Training end to end on a few real (espeak-ng) utterances: Ctrl-C saves, resume is exact."""

import json
import os
import signal

import pytest
import torch

from mho.errors import ConfigError, MhoError
from mho.models.checkpoint import load_checkpoint, save_checkpoint
from mho.train.config import DataConfig, TrainConfig, apply_overrides, load_train_config
from mho.train.trainer import CHECKPOINT, Trainer
from tests.train.conftest import SENTENCES, tiny_config


class LossRecorder:
    """Wraps Trainer.step to record losses; optionally sends `stop_signal` (Ctrl-C's
    SIGINT by default) after N steps."""

    def __init__(self, trainer: Trainer, interrupt_after: int | None = None,
                 stop_signal: int = signal.SIGINT):
        self.losses: list[float] = []
        step = trainer.step

        def recording_step(batch, seed):
            loss = step(batch, seed)
            self.losses.append(loss)
            if len(self.losses) == interrupt_after:
                os.kill(os.getpid(), stop_signal)
            return loss

        trainer.step = recording_step


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_saves_and_resume_continues_exactly(tiny_corpus, tmp_path, stop_signal):
    """Ctrl-C or SIGTERM mid-epoch: the step finishes, the checkpoint holds the position, and
    resuming gives the uninterrupted run's losses and weights."""
    config = tiny_config(tiny_corpus)
    straight = Trainer(config, tmp_path / "straight", progress=False)
    straight_losses = LossRecorder(straight)
    straight.fit()
    assert len(straight_losses.losses) == 6  # 3 batches of 2 utterances, 2 epochs

    interrupted = Trainer(config, tmp_path / "resumed", progress=False)
    LossRecorder(interrupted, interrupt_after=4, stop_signal=stop_signal)  # mid-epoch 2
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    saved = load_checkpoint(tmp_path / "resumed" / CHECKPOINT, model_type="conformer-ctc")
    assert (saved["training"]["epoch"], saved["training"]["batch"]) == (1, 1)

    resumed = Trainer(config, tmp_path / "resumed", progress=False)
    resumed_losses = LossRecorder(resumed)
    resumed.fit(resume=True)
    assert resumed_losses.losses == pytest.approx(straight_losses.losses[4:], rel=1e-5)
    final = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=1e-4, atol=1e-5)
    assert [h["epoch"] for h in final["metadata"]["history"]] == [1, 2]


class Crash(Exception):
    """A kill that no signal announces (SIGKILL, out of memory): nothing runs after it."""


def crash_in_step(trainer: Trainer, crashing_step: int) -> None:
    step, calls = trainer.step, []

    def crashing(batch, seed):
        calls.append(seed)
        if len(calls) == crashing_step:
            raise Crash
        return step(batch, seed)

    trainer.step = crashing


def test_a_crash_loses_at_most_the_steps_since_the_last_timed_save(tiny_corpus, tmp_path):
    """With saves due after every step, a crash in step 5 leaves the checkpoint after step 4
    (mid-epoch 2, not epoch 1's end), and resuming gives the uninterrupted run's losses."""
    config = tiny_config(tiny_corpus)
    straight = Trainer(config, tmp_path / "straight", progress=False)
    straight_losses = LossRecorder(straight)
    straight.fit()

    crashing = Trainer(config, tmp_path / "resumed", progress=False, save_every_s=0.0)
    crash_in_step(crashing, 5)
    with pytest.raises(Crash):
        crashing.fit()
    saved = load_checkpoint(tmp_path / "resumed" / CHECKPOINT, model_type="conformer-ctc")
    assert (saved["training"]["epoch"], saved["training"]["batch"]) == (1, 1)
    assert saved["training"]["step"] == 4

    resumed = Trainer(config, tmp_path / "resumed", progress=False)
    resumed_losses = LossRecorder(resumed)
    resumed.fit(resume=True)
    assert resumed_losses.losses == pytest.approx(straight_losses.losses[4:], rel=1e-5)


def test_default_saves_only_at_epoch_ends(tiny_corpus, tmp_path):
    """The default interval (10 min) writes nothing mid-epoch in a run of seconds: a crash
    in step 5 leaves epoch 1's checkpoint."""
    crashing = Trainer(tiny_config(tiny_corpus), tmp_path, progress=False)
    crash_in_step(crashing, 5)
    with pytest.raises(Crash):
        crashing.fit()
    saved = load_checkpoint(tmp_path / CHECKPOINT, model_type="conformer-ctc")
    assert (saved["training"]["epoch"], saved["training"]["batch"]) == (1, 0)


def test_resume_refuses_another_config(tiny_corpus, tmp_path):
    Trainer(tiny_config(tiny_corpus, epochs=1), tmp_path, progress=False).fit()
    other = Trainer(tiny_config(tiny_corpus, epochs=1, seed=5), tmp_path, progress=False)
    with pytest.raises(MhoError, match="another config"):
        other.fit(resume=True)


def test_checkpoint_of_another_model_type_is_refused(tmp_path):
    save_checkpoint(tmp_path / "w2v.pt", {"model_type": "wav2vec2-ctc", "state_dict": {}})
    with pytest.raises(MhoError, match="'wav2vec2-ctc' model, expected 'conformer-ctc'"):
        load_checkpoint(tmp_path / "w2v.pt", model_type="conformer-ctc")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(MhoError, match="not an mho checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_presets_and_overrides():
    config = load_train_config("conformer-small")
    assert config.size == "small" and config.weight_bits is None
    overrides = ['pe = "none"', "weight_bits = 4", "data.max_train_hours = 2"]
    changed = apply_overrides(config, overrides)
    assert (changed.pe, changed.weight_bits, changed.data.max_train_hours) == ("none", 4, 2.0)
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(config, ["epochz = 3"])
    with pytest.raises(ConfigError, match="weight_bits must be 4 or 8"):
        apply_overrides(config, ["weight_bits = 3"])
    with pytest.raises(ConfigError, match="no config file or preset 'nope'"):
        load_train_config("nope")


def test_qat_fine_tuning_starts_from_float_weights(tiny_corpus, tmp_path):
    float_run = Trainer(tiny_config(tiny_corpus, epochs=1), tmp_path / "float", progress=False)
    float_run.fit()
    qat_config = tiny_config(tiny_corpus, epochs=1, weight_bits=4,
                             init=tmp_path / "float" / CHECKPOINT)
    qat = Trainer(qat_config, tmp_path / "qat", progress=False)
    qat.load_data()
    qat.initialize_from(qat_config.init)
    float_weights = float_run.model.state_dict()
    for name, tensor in qat.model.state_dict().items():
        if "observer" not in name:
            torch.testing.assert_close(tensor, float_weights[name])
    qat.fit()
    layer = qat.model.quantized_layers()["ctc_head"]
    assert layer.integer_weight().abs().max() <= 7 and layer.input_scale > 0

    other = tiny_config(tiny_corpus, epochs=1, pe="none", init=tmp_path / "float" / CHECKPOINT)
    with pytest.raises(MhoError, match="another architecture"):
        Trainer(other, tmp_path / "other", progress=False).fit()


def test_a_wav2vec2_run_starts_from_another_runs_weights(tiny_corpus, tmp_path):
    first = Trainer(tiny_config(tiny_corpus, family="wav2vec2", epochs=1), tmp_path / "first",
                    progress=False)
    first.fit()
    config = tiny_config(tiny_corpus, family="wav2vec2", epochs=1,
                         init=tmp_path / "first" / CHECKPOINT)
    second = Trainer(config, tmp_path / "second", progress=False)
    second.initialize_from(config.init)
    for name, tensor in second.model.state_dict().items():
        torch.testing.assert_close(tensor, first.model.state_dict()[name])


def test_a_plain_model_fine_tunes_into_one_with_utterance_norm(tiny_corpus, tmp_path):
    """A run may switch per-bin utterance normalization on over another run's weights; its
    fixed statistics are then those of the centred features: mean 0 in every bin (each
    utterance's centred frames sum to 0) and the std of the frames about their own means."""
    Trainer(tiny_config(tiny_corpus, epochs=1), tmp_path / "plain", progress=False).fit()
    config = tiny_config(tiny_corpus, epochs=1, model={"utterance_norm": "spectrum"},
                         init=tmp_path / "plain" / CHECKPOINT)
    run = Trainer(config, tmp_path / "centred", progress=False)
    run.load_data()
    centred = torch.cat([f.double() - f.double().mean(0) for f in run.train_set.features])
    normalization = run.model.normalization
    assert normalization.utterance_norm == "spectrum"
    torch.testing.assert_close(normalization.mean.double(), torch.zeros(80, dtype=torch.float64),
                               atol=1e-5, rtol=0)  # float32 sums of ~1e2 frames
    torch.testing.assert_close(normalization.std.double(), centred.std(0, unbiased=False),
                               atol=1e-4, rtol=1e-4)
    run.fit()
    assert run.state.epoch == 1
    # training on from it without saying so would drop the normalization: refused
    plain_again = tiny_config(tiny_corpus, epochs=1, init=tmp_path / "centred" / CHECKPOINT)
    with pytest.raises(MhoError, match=r"another architecture \(differs in \['utterance_norm'\]"):
        Trainer(plain_again, tmp_path / "plain-again", progress=False).fit()


def test_a_second_run_into_the_same_folder_needs_resume(tiny_corpus, tmp_path):
    Trainer(tiny_config(tiny_corpus, epochs=1), tmp_path, progress=False).fit()
    with pytest.raises(MhoError, match="already holds a run"):
        Trainer(tiny_config(tiny_corpus, epochs=1), tmp_path, progress=False).fit()


def test_pack_writes_a_small_model_and_a_scored_card(tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from mho.cli import main

    Trainer(tiny_config(tiny_corpus, epochs=1), tmp_path / "float", progress=False).fit()
    qat = tiny_config(tiny_corpus, epochs=1, weight_bits=8, init=tmp_path / "float" / CHECKPOINT)
    Trainer(qat, tmp_path / "qat", progress=False).fit()
    result = CliRunner().invoke(main, [
        "models", "pack", str(tmp_path / "qat" / CHECKPOINT), "--name", "tiny-w8",
        "--eval-data", str(tiny_corpus / "dev.jsonl"), "--out-dir", str(tmp_path / "shipped"),
    ])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "shipped" / "tiny-w8.json").read_text())
    assert (card["pe"], card["weight_bits"]) == ("sinusoidal+linear", 8)
    assert [(r["data"], r["decoder"]) for r in card["results"]] == [("dev", "greedy"),
                                                                      ("dev", "lm")]
    assert len(card["history"]) == 2  # float pre-training epoch + QAT epoch
    assert card["bytes"] < (tmp_path / "qat" / CHECKPOINT).stat().st_size / 4
    assert not list((tmp_path / "shipped").glob("*.partial"))

    # re-scoring the packed model in place keeps its file byte for byte and scores the same
    packed_bytes = (tmp_path / "shipped" / "tiny-w8.pt").read_bytes()
    result = CliRunner().invoke(main, [
        "models", "pack", str(tmp_path / "shipped" / "tiny-w8.pt"), "--name", "tiny-w8",
        "--eval-data", str(tiny_corpus / "dev.jsonl"), "--out-dir", str(tmp_path / "shipped"),
    ])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "shipped" / "tiny-w8.pt").read_bytes() == packed_bytes
    rescored = json.loads((tmp_path / "shipped" / "tiny-w8.json").read_text())

    def timeless(card: dict) -> dict:
        timing = ("compute_seconds", "rtf")
        return {**card, "results": [{k: v for k, v in r.items() if k not in timing}
                                    for r in card["results"]]}

    assert timeless(rescored) == timeless(card)

    # fine-tuning a packed model: its integer weights come back exactly on the QAT grid
    packed = load_checkpoint(tmp_path / "shipped" / "tiny-w8.pt")
    tune = tiny_config(tiny_corpus, epochs=1, weight_bits=8,
                       init=tmp_path / "shipped" / "tiny-w8.pt")
    tuner = Trainer(tune, tmp_path / "tune", progress=False)
    tuner.load_data()
    tuner.initialize_from(tune.init)
    for name, layer in tuner.model.quantized_layers().items():
        torch.testing.assert_close(layer.integer_weight().to(torch.int8),
                                   packed["integer_weights"][name], rtol=0, atol=0)
    tuner.fit()
    result = CliRunner().invoke(main, [
        "models", "pack", str(tmp_path / "tune" / CHECKPOINT), "--name", "tiny-tuned",
        "--out-dir", str(tmp_path / "shipped")])
    assert result.exit_code == 0, result.output
    tuned = json.loads((tmp_path / "shipped" / "tiny-tuned.json").read_text())
    assert len(tuned["history"]) == 3  # float, QAT, fine-tuning epochs
    assert (tuned["fine_tuned_from"], tuned["qat_hours"]) == ("tiny-w8", card["qat_hours"])
    assert tuned["fine_tune_hours"] == card["qat_hours"]  # the same six utterances

    # every run of the lineage, with its data, time and machine, in order
    import soundfile

    from mho.timing import machine_description

    # the audio as read from the files (the manifest's durations are nominal here); the
    # trainer counts feature frames, T = S // 160 + 1: at most one 10 ms frame more each
    files = list(tiny_corpus.glob("*.flac"))
    hours = sum(soundfile.info(path).duration for path in files) / 3600
    frame_hours = len(files) * 0.010 / 3600
    runs = tuned["training_runs"]
    assert [(r["init"], r["weight_bits"]) for r in runs] == [
        (None, None), (CHECKPOINT.removesuffix(".pt"), 8), ("tiny-w8", 8)]
    for run, folder in zip(runs, ("float", "qat", "tune"), strict=True):
        metadata = load_checkpoint(tmp_path / folder / CHECKPOINT)["metadata"]
        assert 0 <= run["data_hours"] - hours <= frame_hours
        assert run["epochs"] == 1 and run["threads"] == 1
        assert run["wall_minutes"] == pytest.approx(metadata["train_seconds"] / 60)
        assert run["audio_seconds_per_second"] * metadata["train_seconds"] == pytest.approx(
            run["data_hours"] * 3600)
        assert (run["device"], run["machine"]) == ("cpu", machine_description("cpu"))

    from mho.models.zoo import training_runs_table

    columns, rows = training_runs_table(tuned)
    assert [row[columns.index("from")] for row in rows] == ["-", "checkpoint", "tiny-w8"]
    assert [row[columns.index("bits")] for row in rows] == ["float", "8", "8"]


def test_feature_archive_round_trip_and_training_from_it(tiny_corpus, tmp_path):
    """The 8-bit archive reproduces the features to its step size, keeps labels and texts
    exactly, and `mho train` reads it in place of the manifest."""
    from mho.data.feature_set import FeatureSet
    from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
    from mho.data.manifest import read_manifest

    utterances = read_manifest(tiny_corpus / "train.jsonl")
    original = FeatureSet.build(utterances, Lexicon.from_cmudict(), PHONE_VOCABULARY,
                                progress=False)
    original.save_archive(tmp_path / "train.pt")
    restored = FeatureSet.load_archive(tmp_path / "train.pt")
    assert [u.text for u in restored.utterances] == SENTENCES
    stored = torch.load(tmp_path / "train.pt", weights_only=True)
    for a, b in zip(original.features, restored.features, strict=True):
        assert a.shape == b.shape
        # rounding to the grid, plus fp16 storage of values up to ~15 (ulp 2**-7)
        assert (a.float() - b.float()).abs().max() <= stored["step"].max() / 2 + 2**-6
    assert all(torch.equal(a, b) for a, b in zip(original.labels, restored.labels, strict=True))

    data = DataConfig(train=tmp_path / "train.pt", dev=tmp_path / "train.pt",
                      max_dev_utterances=2)
    state = Trainer(tiny_config(tiny_corpus, data=data, epochs=1), tmp_path / "run",
                    progress=False).fit()
    assert state.epoch == 1 and len(state.history) == 1


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    from mho.data.feature_set import FeatureSet

    torch.save({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(MhoError, match="not an mho feature archive"):
        FeatureSet.load_archive(tmp_path / "x.pt")


def test_augmented_training_resumes_exactly(tiny_corpus, tmp_path):
    # waveforms in, features augmented per batch with a seed from (seed, epoch, batch): an
    # interrupted and resumed run hears exactly what an uninterrupted one heard
    from mho.data.augment import AugmentConfig
    from mho.train.augmented import AugmentedWaveformSet

    augment = AugmentConfig(speed_prob=0.5, warp_prob=0.5, reverb_prob=0.5, noise_prob=0.5,
                            bandlimit_prob=0.5)
    config = tiny_config(tiny_corpus, augment=augment)
    straight = Trainer(config, tmp_path / "straight", progress=False)
    straight_losses = LossRecorder(straight)
    straight.fit()
    assert isinstance(straight.train_set, AugmentedWaveformSet)
    assert len(straight_losses.losses) == 6

    interrupted = Trainer(config, tmp_path / "resumed", progress=False)
    LossRecorder(interrupted, interrupt_after=4)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer(config, tmp_path / "resumed", progress=False)
    resumed_losses = LossRecorder(resumed)
    resumed.fit(resume=True)
    assert resumed_losses.losses == pytest.approx(straight_losses.losses[4:], rel=1e-5)
    # and the augmentation changes what the model hears (another loss than without it)
    plain = Trainer(tiny_config(tiny_corpus, augment=AugmentConfig()), tmp_path / "plain",
                    progress=False)
    plain_losses = LossRecorder(plain)
    plain.fit()
    assert plain_losses.losses[0] != pytest.approx(straight_losses.losses[0], rel=1e-3)


def test_augment_is_for_conformers():
    from mho.data.augment import AugmentConfig

    with pytest.raises(ConfigError, match="conformer family only"):
        TrainConfig(family="wav2vec2", augment=AugmentConfig())
