"""The command line: real evaluation end to end, and one-line errors on bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mho.cli import main
from mho.data.manifest import Utterance, read_manifest, write_manifest
from tests.conftest import needs_lmplz

SENTENCES = ["the dog barked all night long", "she sells sea shells by the sea shore"]


@pytest.fixture(scope="module")
def slt_manifest(tmp_path_factory):
    """Two sentences spoken by flite's slt voice (a held-out voice), 16 kHz FLAC."""
    if shutil.which("flite") is None or shutil.which("sox") is None:
        pytest.fail("flite and sox are installed by `make setup`")
    root = tmp_path_factory.mktemp("slt")
    utterances = []
    for i, text in enumerate(SENTENCES):
        wav, flac = root / f"{i}.wav", root / f"{i}.flac"
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(wav)], check=True)
        subprocess.run(["sox", "-G", str(wav), "-r", "16000", "-c", "1", str(flac)], check=True)
        utterances.append(Utterance(f"slt-{i}", flac, 2.0, text))
    write_manifest(root / "slt.jsonl", utterances)
    return root / "slt.jsonl"


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_eval_pocketsphinx_json(slt_manifest):
    result = run("eval", "pocketsphinx", "--data", slt_manifest, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["utterances"] == 2 and record["runtime"] == "pocketsphinx"
    assert {"wer", "cer", "rtf", "decoder"} <= record.keys()
    # PocketSphinx understands this clear voice most of the time, but not perfectly.
    assert 0 <= record["wer"] < 60 and 0 < record["rtf"] < 2


def test_eval_gain_plays_the_audio_louder_or_quieter(slt_manifest):
    """At -120 dB the model hears silence (nothing recognized); at 0 dB it hears the voice;
    the table names the gain; with --memristor it is refused in one line."""
    records = {}
    for gain in (0, -120):
        result = run("eval", "conformer-sinusoidal-linear-w8", "--data", slt_manifest,
                     "--decoder", "greedy", "--gain", gain, "--json")
        assert result.exit_code == 0, result.output
        records[gain] = json.loads(result.output)
    assert records[-120]["gain_db"] == -120 and records[0]["gain_db"] == 0
    assert records[0]["wer"] < 60 and records[-120]["wer"] == 100  # every word deleted
    table = run("eval", "conformer-sinusoidal-linear-w8", "--data", slt_manifest,
                "--decoder", "greedy", "--gain", "-6")
    assert "(-6 dB)" in table.output
    refused = run("eval", "conformer-sinusoidal-linear-w8", "--data", slt_manifest,
                  "--memristor", "--gain", "-6")
    assert refused.exit_code == 1 and "--gain is for runs without --memristor" in refused.output


def test_eval_table_lists_every_set(slt_manifest):
    result = run("eval", "pocketsphinx", "--data", slt_manifest, "--data", slt_manifest)
    assert result.exit_code == 0, result.output
    assert result.output.count("slt ") >= 2 and "WER" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "nosuchmodel", "--data", "flite-slt"], "unknown model 'nosuchmodel'"),
        (["eval", "pocketsphinx", "--data", "/no/such.jsonl"], "manifest not found"),
        (["eval", "pocketsphinx", "--data", "nosuchset"], "unknown data set 'nosuchset'"),
        (["models", "runs", "nosuchmodel"], "no shipped model 'nosuchmodel'"),
        (["eval", "conformer-none-w8", "--data", "flite-slt", "--decoder", "greedy",
          "--beam-size", "8"], "a beam size is for the LM decoder, not 'greedy'"),
        (["eval", "conformer-none-w8", "--data", "flite-slt", "--beam-size", "0"],
         "beam size must be at least 1, got 0"),
        (["eval", "pocketsphinx", "--data", "flite-slt", "--beam-size", "8"],
         "pocketsphinx runs its own search"),
    ],
)
def test_bad_arguments_fail_in_one_line(args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and message in result.output


def test_corrupt_audio_names_utterance_and_path(tmp_path):
    (tmp_path / "broken.flac").write_bytes(b"\x00" * 100)
    write_manifest(tmp_path / "m.jsonl", [Utterance("u1", tmp_path / "broken.flac", 1.0, "a b")])
    result = run("eval", "pocketsphinx", "--data", tmp_path / "m.jsonl")
    assert result.exit_code == 1
    assert "utterance u1" in result.output and "broken.flac" in result.output


def test_an_unwritable_export_fails_before_the_model_loads(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("export", "onnx", "no-such-model", "-o", blocker / "x.onnx")
    # the path is checked first: the unknown model is never reached
    assert result.exit_code == 1 and "cannot write" in result.output
    assert result.output.strip().count("\n") == 0


@pytest.mark.parametrize("command", ["eval", "transcribe", "check"])
def test_commands_that_run_models_take_threads_and_an_lm(command):
    result = run(command, "--help")
    assert "--threads" in result.output and "--lm" in result.output


def test_transcribe_checks_every_file_before_loading(tmp_path):
    result = run("transcribe", "no-such-model", tmp_path / "missing.wav")
    assert result.exit_code == 1 and "no such audio file" in result.output


def test_data_lm_unknown_text_source_is_a_one_line_error(tmp_path):
    result = run("data", "lm", "--sources", "corpus,bible", "--out", tmp_path / "lm")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: unknown text source 'bible'; choose from corpus, gcide, jargon"
    ]


@needs_lmplz
def test_data_lm_held_out_unk_from_a_file(tmp_path):
    """--held-out FILE: the rate comes from that text (1 of its 4 words unseen here)."""
    text, held_out = tmp_path / "text.txt", tmp_path / "held_out.txt"
    text.write_text("the cat sat on the mat\nthe dog sat on the log\n")
    held_out.write_text("the cat ate\non\n")
    result = run("data", "lm", "--text", text, "--unk", "held-out", "--held-out", held_out,
                 "--out", tmp_path / "lm")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "lm" / "lm.json").read_text())
    assert info["unk"] == "held-out" and info["held_out_oov_rate"] == 1 / 4
    refused = run("data", "lm", "--text", text, "--held-out", held_out, "--out", tmp_path / "x")
    assert refused.exit_code == 1 and "add --unk held-out" in refused.output


def test_data_join_and_convert_voices_cli(slt_manifest, tmp_path):
    result = run("data", "join", slt_manifest, slt_manifest, "-o", tmp_path / "both.jsonl")
    assert result.exit_code == 0, result.output
    assert "4 utterances" in result.output
    assert [u.id for u in read_manifest(tmp_path / "both.jsonl")][::2] == ["0-slt-0", "1-slt-0"]
    result = run("data", "convert-voices", slt_manifest, "-o", tmp_path / "vc",
                 "--female-share", "1.5")
    assert result.exit_code == 2 and "--female-share" in result.output
    result = run("data", "convert-voices", slt_manifest, "-o", tmp_path / "vc",
                 "--postfilter", "0.3", "0.1")
    assert result.exit_code == 1 and "postfilter must be a range" in result.output
    assert not (tmp_path / "vc").exists()  # refused before any work


@pytest.mark.parametrize("chosen", [None, "ACTIVE"])
def test_the_cli_lets_idle_openmp_threads_sleep_unless_the_user_chose(chosen):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if chosen:
        env["OMP_WAIT_POLICY"] = chosen
    probe = ("import os, sys, mho.cli; "
             "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    # set before torch or numba is loaded: their OpenMP runtimes read it once, when they load
    assert out == [chosen or "PASSIVE", "False", "False"]


def test_transcribe_refuses_a_beam_size_before_the_model_loads(slt_manifest):
    audio = next(slt_manifest.parent.glob("*.flac"))
    result = run("transcribe", "no-such-model", audio, "--beam-size", "0")
    # the beam size is checked first: the unknown model is never reached
    assert result.exit_code == 1 and "beam size must be at least 1, got 0" in result.output
    assert result.output.strip().count("\n") == 0
