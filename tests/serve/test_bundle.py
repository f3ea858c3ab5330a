"""Deployment bundles: what they hold, that mho decodes a bundle from its own files exactly as
from its shipped assets, that the standalone decode.py (no mho) agrees, and clear errors."""

import json
import subprocess
import sys

import onnx
import pytest
from click.testing import CliRunner

from mho.cli import main
from mho.data.datasets import shipped_set_dir
from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
from mho.errors import MhoError
from mho.exporter.bundle import Bundle, write_bundle
from mho.serve.config import ServeConfig
from mho.serve.server import ServerThread


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.fixture(scope="module")
def bundle(model_file, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bundles") / "synthetic-bundle"
    report = write_bundle(model_file, directory)
    assert set(report.files) == {"model.onnx", "tokens.txt", "lexicon.txt", "lm.bin",
                                 "word_counts.tsv", "decode.py", "bundle.json", "README.md"}
    return directory


def transcripts(output: str) -> list[str]:
    return [line.split("\t")[1] for line in output.strip().splitlines()]


def test_bundle_contents(bundle, model_file):
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["format"] == "mho-bundle" and manifest["decoders"] == ["greedy", "lm"]
    assert manifest["metadata"]["model_type"] == "synthetic-ctc"
    assert manifest["beam"]["unk_score"] is None  # -inf: never emit <unk>
    assert (bundle / "model.onnx").read_bytes() == model_file.read_bytes()
    tokens = (bundle / "tokens.txt").read_text().splitlines()
    assert tokens[:2] == ["<blank> 0", "| 1"] and len(tokens) == len(PHONE_VOCABULARY)
    opened = Bundle.open(bundle)
    assert opened.vocabulary() == PHONE_VOCABULARY.tokens and opened.name == bundle.name
    assert Lexicon.read(bundle / "lexicon.txt") == Lexicon.from_cmudict()
    readme = (bundle / "README.md").read_text()
    assert "python decode.py" in readme and "mho serve DIR" in readme


def test_transcribe_a_bundle_as_the_file(bundle, model_file, utterances):
    """The bundle's own lexicon and counts decode exactly as mho's shipped assets."""
    paths = [u.audio for u in utterances[:6]]
    from_bundle = run("transcribe", bundle, *paths, "--decoder", "greedy")
    from_file = run("transcribe", model_file, *paths, "--decoder", "greedy")
    assert from_bundle.exit_code == 0 and from_file.exit_code == 0, from_bundle.output
    assert transcripts(from_bundle.output) == transcripts(from_file.output)


def test_serve_a_bundle_and_a_file_by_name(bundle, model_file, utterances):
    import httpx

    config = ServeConfig(port=0, workers=1, decoder="greedy")
    with ServerThread(config, [f"packed={bundle}", str(model_file)]) as server:
        names = [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]]
        assert names == ["packed", "synthetic"]
        texts = []
        for name in names:
            with open(utterances[0].audio, "rb") as audio:
                texts.append(httpx.post(server.url + "/v1/audio/transcriptions",
                                        files={"file": audio}, data={"model": name},
                                        timeout=60).json()["text"])
    expected = transcripts(run("transcribe", model_file, utterances[0].audio,
                               "--decoder", "greedy").output)
    assert texts == expected * 2


def test_bundle_errors(bundle, model_file, tmp_path):
    features = onnx.load(str(model_file))
    for prop in features.metadata_props:
        if prop.key == "input":
            prop.value = "features"
    onnx.save(features, str(tmp_path / "features.onnx"))
    with pytest.raises(MhoError, match="reads log-mel features: a bundle carries a "
                                       "waveform-input export"):
        write_bundle(tmp_path / "features.onnx", tmp_path / "b")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(MhoError, match="exists and is not an mho bundle"):
        write_bundle(model_file, tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(MhoError, match="is not an mho bundle"):
        Bundle.open(tmp_path / "taken")
    broken = tmp_path / "broken"
    write_bundle(model_file, broken)
    (broken / "lm.bin").unlink()
    audio = next((shipped_set_dir() / "flite-slt").glob("*.flac"))  # the paths pass first
    result = run("transcribe", broken, audio)
    assert result.exit_code == 1 and result.output.strip() == f"error: bundle {broken} lacks lm.bin"


@pytest.mark.parametrize("args, message", [
    (["-o", "x.onnx", "--bundle", "b"], "give the output: -o FILE.onnx or --bundle DIR"),
    ([], "give the output: -o FILE.onnx or --bundle DIR"),
    (["--bundle", "b", "--input", "features"], "a bundle carries a waveform-input model"),
])
def test_export_bundle_options(args, message):
    result = run("export", "onnx", "conformer-sinusoidal-linear-w8", *args)
    assert result.exit_code == 1 and message in result.output


BLOCK_MHO = ("import runpy, sys; sys.modules['mho'] = None; sys.argv = sys.argv[1:]; "
             "runpy.run_path(sys.argv[0], run_name='__main__')")


def test_standalone_search_finishes_a_cut_short_word_as_mho_does(bundle):
    """Emissions sure of "the", then of F EH B R UW and blanks: the audio ends inside
    "february". decode.py's search (its own copy of mho's) and mho's both finish the word."""
    import runpy

    from tests.decoding.test_decoders import emissions, sentence_frames

    script = runpy.run_path(str(bundle / "decode.py"))
    manifest = json.loads((bundle / "bundle.json").read_text())
    log_probs = emissions(*sentence_frames("DH AH", "F EH B R UW"), margin=40.0)
    standalone = script["BeamSearch"](bundle, manifest)(log_probs)
    assert standalone == Bundle.open(bundle).decoder("lm").decode(log_probs) == "the february"


@pytest.mark.slow
def test_standalone_decode_script_agrees_with_mho(bundle, model_file, utterances):
    """decode.py with `import mho` made impossible: the LM beam search written apart from
    mho's gives mho's words, from the bundle and from the bare file with mho's assets."""
    paths = [str(u.audio) for u in utterances[:5]]
    standalone = subprocess.run([sys.executable, "-c", BLOCK_MHO, str(bundle / "decode.py"),
                                 str(bundle), *paths], capture_output=True, text=True,
                                timeout=600)
    assert standalone.returncode == 0, standalone.stderr
    with_mho = run("transcribe", bundle, *paths, "--decoder", "lm")
    assert with_mho.exit_code == 0, with_mho.output
    assert standalone.stdout == with_mho.output
    from_file = run("transcribe", model_file, *paths, "--decoder", "lm")
    assert transcripts(from_file.output) == transcripts(with_mho.output)
    assert all(transcripts(with_mho.output))  # words, not empty lines
