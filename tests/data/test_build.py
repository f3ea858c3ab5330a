import collections
import shutil

import pytest
import soundfile

import mho.data.synth as synth
from mho.data.audio import SAMPLE_RATE
from mho.data.build import (
    DEV,
    SETS,
    TEST_FESTIVAL,
    TEST_FLITE,
    TEST_VOICES,
    TRAIN,
    CorpusConfig,
    build_corpus,
    plan_corpus,
)
from mho.data.manifest import read_manifest
from mho.data.synth import ESPEAK, FESTIVAL, FLITE
from mho.data.text import corpus_sentences
from mho.errors import MhoError

TINY_HOURS = 0.01  # 36 s of train audio: ~13 utterances, plus 10 per eval set


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, build_corpus(out, hours=TINY_HOURS, seed=0, workers=2, progress=False)


def _snapshot(out):
    return {
        path.relative_to(out): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }


def test_tiny_build_layout_and_audio(tiny):
    out, manifests = tiny
    assert manifests == {name: out / f"{name}.jsonl" for name in SETS}
    for name in SETS:
        utterances = read_manifest(manifests[name])
        assert len({utt.id for utt in utterances}) == len(utterances)
        for utt in utterances:
            assert utt.audio == (out / "audio" / name / f"{utt.id}.flac").resolve()
            info = soundfile.info(str(utt.audio))
            assert (info.format, info.samplerate, info.channels) == ("FLAC", SAMPLE_RATE, 1)
            assert utt.duration == pytest.approx(info.frames / SAMPLE_RATE, abs=1e-4)
            # Plausible speech: about 0.06 s per character at normal speed.
            assert 0.02 * len(utt.text) < utt.duration < 0.5 + 0.12 * len(utt.text), utt
    assert not list(out.rglob("*.partial"))


def test_tiny_build_texts_come_from_their_split(tiny):
    out, manifests = tiny
    split = corpus_sentences(0)
    texts = {name: [utt.text for utt in read_manifest(manifests[name])] for name in SETS}
    assert set(texts[TRAIN]) <= set(split["train"])
    assert set(texts[DEV]) <= set(split["dev"])
    assert set(texts[TEST_FLITE]) <= set(split["test"])
    assert texts[TEST_FLITE] == texts[TEST_FESTIVAL]  # the same sentences, two voices
    assert len(texts[DEV]) == len(texts[TEST_FLITE]) == CorpusConfig().min_eval_utterances
    train_hours = sum(utt.duration for utt in read_manifest(manifests[TRAIN])) / 3600
    assert 0.7 * TINY_HOURS < train_hours < 1.3 * TINY_HOURS


def test_rebuild_is_a_noop(tiny):
    out, manifests = tiny
    before = _snapshot(out)
    again = build_corpus(out, hours=TINY_HOURS, seed=0, workers=2, progress=False)
    assert again == manifests
    assert _snapshot(out) == before  # same bytes, same modification times


def test_resume_replaces_only_missing_and_corrupt_audio(tiny, tmp_path):
    source, _ = tiny
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    utterances = read_manifest(out / "train.jsonl")
    missing, corrupt = utterances[0].audio, utterances[1].audio
    kept = {utt.audio: utt.audio.stat().st_mtime_ns for utt in utterances[2:]}
    missing.unlink()
    corrupt.write_bytes(b"not audio")
    build_corpus(out, hours=TINY_HOURS, seed=0, workers=1, progress=False)
    assert read_manifest(out / "train.jsonl") == utterances
    assert soundfile.info(str(missing)).frames and soundfile.info(str(corrupt)).frames
    assert {path: path.stat().st_mtime_ns for path in kept} == kept


def test_directory_of_another_plan_is_refused(tiny):
    out, _ = tiny
    with pytest.raises(MhoError, match="another plan"):
        build_corpus(out, hours=TINY_HOURS, seed=1, progress=False)


def test_missing_synthesizer_fails_before_any_work(tmp_path, monkeypatch):
    real_which = synth.shutil.which
    monkeypatch.setattr(
        synth.shutil, "which", lambda tool: None if tool == FESTIVAL else real_which(tool)
    )
    with pytest.raises(MhoError, match="festival not found: apt-get install festival"):
        build_corpus(tmp_path / "out", hours=TINY_HOURS, progress=False)
    assert not (tmp_path / "out").exists()


def test_plan_is_seeded_and_mixes_engines():
    config = CorpusConfig(hours=2.0, seed=0)
    plan = plan_corpus(config)
    assert plan == plan_corpus(config)
    assert plan[TRAIN] != plan_corpus(CorpusConfig(hours=2.0, seed=1))[TRAIN]
    train = plan[TRAIN]
    assert len({item.text for item in train}) == len(train)  # no repeats before exhaustion
    # Planned hours per engine (estimated from text length) follow the configured shares.
    seconds = collections.Counter()
    for item in train:
        seconds[item.voice.engine] += 0.062 * len(item.text) / item.voice.speed
    total = sum(seconds.values())
    assert total / 3600 == pytest.approx(2.0, rel=0.1)
    for engine, share in config.engine_shares:
        assert seconds[engine] / total == pytest.approx(share, abs=0.05), engine
    assert len({item.voice.name for item in train if item.voice.engine == ESPEAK}) > 30
    assert {item.voice.name for item in train if item.voice.engine == FLITE} == {
        "kal16",
        "awb",
        "rms",
    }
    # Held-out voices never appear in train or dev; the test sets use only them.
    train_dev_voices = {item.voice.name for item in train + plan[DEV]}
    assert not train_dev_voices & {voice.name for voice in TEST_VOICES.values()}
    for name, voice in TEST_VOICES.items():
        assert {item.voice for item in plan[name]} == {voice}
    assert len(plan[DEV]) == len(plan[TEST_FLITE]) == 40  # 400 at 20 h, scaled by hours


def test_plan_refuses_nonpositive_hours():
    with pytest.raises(MhoError, match="hours must be positive"):
        plan_corpus(CorpusConfig(hours=0.0))


def test_voice_set_all_adds_accents_and_keeps_test_voices_out():
    from mho.data.build import ALL_ESPEAK_BASES, ALL_FLITE_VOICES

    plan = plan_corpus(CorpusConfig(hours=2.0, seed=0, voices="all"))
    train_dev = plan[TRAIN] + plan[DEV]
    accents = {item.voice.name.split("+")[0] for item in train_dev
               if item.voice.engine == ESPEAK}
    assert accents == set(ALL_ESPEAK_BASES)
    assert {item.voice.name for item in plan[TRAIN] if item.voice.engine == FLITE} == set(
        ALL_FLITE_VOICES)
    assert not {item.voice.name for item in train_dev} & {v.name for v in TEST_VOICES.values()}
    for name, voice in TEST_VOICES.items():
        assert {item.voice for item in plan[name]} == {voice}


def test_classic_plan_is_unchanged_by_voice_sets():
    # the default is what earlier corpora were built from: same plan, same stamp keys
    assert plan_corpus(CorpusConfig(hours=0.5, seed=0)) == plan_corpus(
        CorpusConfig(hours=0.5, seed=0, voices="classic", split_seed=0))
    with pytest.raises(MhoError, match="voices must be one of"):
        CorpusConfig(voices="robots")


def test_split_seed_keeps_the_test_sentences_out_of_training():
    held_out = set(corpus_sentences(0)["test"]) | set(corpus_sentences(0)["dev"])
    other = plan_corpus(CorpusConfig(hours=1.0, seed=3, voices="all", split_seed=0))
    assert not {item.text for item in other[TRAIN]} & held_out
    assert {item.text for item in other[TEST_FLITE]} <= set(corpus_sentences(0)["test"])
    # without it, another seed draws another split: some of seed 0's test sentences train
    leaky = plan_corpus(CorpusConfig(hours=1.0, seed=3))
    assert {item.text for item in leaky[TRAIN]} & set(corpus_sentences(0)["test"])


def test_build_only_some_sets_with_the_python_converter(tmp_path):
    out = tmp_path / "c"
    manifests = build_corpus(out, hours=TINY_HOURS, seed=0, voices="all", workers=2,
                             progress=False, sets=(TRAIN, DEV), converter="python")
    assert set(manifests) == {TRAIN, DEV}
    assert not (out / "audio" / TEST_FLITE).exists()
    for utt in read_manifest(manifests[TRAIN]):
        info = soundfile.info(str(utt.audio))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    # the same directory then takes the test sets too (one plan, stamped once)
    full = build_corpus(out, hours=TINY_HOURS, seed=0, voices="all", workers=2, progress=False,
                        converter="python")
    assert set(full) == set(SETS)
    with pytest.raises(MhoError, match="sets must be among"):
        build_corpus(out, hours=TINY_HOURS, seed=0, voices="all", progress=False,
                     sets=("train", "tests"))
