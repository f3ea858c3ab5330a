"""Cross-runtime parity: the same model on torch and on exported-file runtimes, utterance by
utterance, down to the transcript.

Per runtime against torch: max and mean |difference| of the CTC log-probs, the fraction of
frames whose best token agrees, the CER between the greedy transcripts, and the WER of each
on the set. 8-bit models amplify float rounding: a float32 sum taken in another order can
move one activation across a rounding boundary of its 8-bit grid (or a read across an ADC
code), and that step reaches every later frame through attention, so log-prob differences
of 0.1-1 on some utterances are the expected behaviour of a correct export; transcripts and
WER are the criteria that count, and the defaults below allow for it.

With read noise on, every run of a memristor model draws fresh noise (torch and onnxruntime
from their own streams), so `check_noisy_parity` compares WER distributions over runs.
"""

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
from tqdm import tqdm

from mho.data.manifest import Utterance, load_utterance_audio
from mho.data.text import normalize_transcript
from mho.decoding.decoders import Decoder, load_decoder
from mho.decoding.scoring import error_rates
from mho.errors import MhoError
from mho.runtime.session import COREML_RUNTIMES
from mho.runtime.speech import SpeechSession


@dataclass(frozen=True)
class Tolerances:
    mean_abs: float = 0.5  # mean |log-prob difference| over all frames of the set
    transcript_cer: float = 5.0  # percent: greedy transcripts vs torch's
    # absolute WER points vs torch's; None: derived from the set (`wer_tolerance`)
    wer_delta: float | None = None


def wer_tolerance(words: int, wer: float) -> float:
    """The |WER delta| (points) a runtime may show on a set of ``words`` reference words where
    torch scores ``wer`` %: two binomial standard errors of a WER measured on that many
    words, and never less than one word. A runtime that sums in another order flips a few
    rounding ties and with them a few words; on 116 words one flip moves the WER by 0.9
    points, on 5,000 words by 0.02, so a fixed allowance is either too strict for small
    sets or blind on large ones."""
    if words < 1:
        raise MhoError("the set has no reference words")
    p = min(max(wer / 100, 0.0), 1.0)
    return max(100 / words, 2 * 100 * (p * (1 - p) / words) ** 0.5)


@dataclass(frozen=True)
class RuntimeParity:
    runtime: str
    max_abs: float  # largest |log-prob difference| on the set
    mean_abs: float  # mean over all frames and tokens
    frames_agree: float  # fraction of frames with the same best token
    transcript_cer: float  # percent, greedy transcripts vs torch's greedy transcripts
    wer: float  # percent, with the chosen decoder
    wer_delta: float  # wer - torch's wer
    wer_allowed: float  # the |wer_delta| it may have (Tolerances.wer_delta or derived)
    seconds: float  # inside the runtime (decoding excluded)
    passed: bool
    failures: list[str]  # which tolerances it exceeded


def check_parity(
    reference: SpeechSession,  # torch
    runtimes: dict[str, SpeechSession],
    utterances: Sequence[Utterance],
    decoder: Decoder,
    tolerances: Tolerances = Tolerances(),
    progress: bool = True,
) -> tuple[float, list[RuntimeParity]]:
    """Torch's WER and one RuntimeParity per entry of `runtimes`."""
    # greedy transcripts compare what the runtimes computed, without the LM's search
    greedy = load_decoder("greedy", tokens=reference.vocabulary)
    names = ["torch", *runtimes]
    sessions = {"torch": reference, **runtimes}
    hypotheses = {name: [] for name in names}
    greedy_texts = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    diffs = {name: [] for name in runtimes}  # per utterance: (max, sum, count, agreeing frames)
    for utt in tqdm(utterances, desc="parity", unit="utt", disable=not progress, leave=False):
        waveform = load_utterance_audio(utt)
        outputs = {}
        for name in names:
            started = time.perf_counter()
            log_probs = sessions[name].log_probs([waveform])[0]  # [T', V]
            outputs[name] = np.asarray(log_probs, dtype=np.float64)
            seconds[name] += time.perf_counter() - started
            hypotheses[name].append(decoder.decode(outputs[name].astype(np.float32)))
            greedy_texts[name].append(greedy.decode(outputs[name].astype(np.float32)))
        for name in runtimes:
            difference = np.abs(outputs[name] - outputs["torch"])
            agree = outputs[name].argmax(-1) == outputs["torch"].argmax(-1)
            diffs[name].append((difference.max(), difference.sum(), difference.size, agree.mean()))
    references = [u.text for u in utterances]
    torch_wer, _ = error_rates(references, hypotheses["torch"])
    words = sum(len(normalize_transcript(text).split()) for text in references)
    wer_allowed = (wer_tolerance(words, torch_wer) if tolerances.wer_delta is None
                   else tolerances.wer_delta)
    results = []
    for name in runtimes:
        stats = np.array(diffs[name])  # [U, 4]
        wer, _ = error_rates(references, hypotheses[name])
        pairs = [(a, b) for a, b in zip(greedy_texts["torch"], greedy_texts[name], strict=True)
                 if a or b]
        cer = 100 * jiwer.cer([a or "-" for a, _ in pairs], [b for _, b in pairs]) if pairs else 0.0
        mean_abs = float(stats[:, 1].sum() / stats[:, 2].sum())
        failures = [
            f"{label} {value:.3g} > {limit:.3g}"
            for label, value, limit in (
                ("mean |log-prob diff|", mean_abs, tolerances.mean_abs),
                ("transcript CER %", cer, tolerances.transcript_cer),
                ("|WER delta|", abs(wer - torch_wer), wer_allowed),
            )
            if value > limit
        ]
        results.append(RuntimeParity(
            runtime=name,
            max_abs=float(stats[:, 0].max()),
            mean_abs=mean_abs,
            frames_agree=float(np.average(stats[:, 3], weights=stats[:, 2])),
            transcript_cer=cer,
            wer=wer,
            wer_delta=wer - torch_wer,
            wer_allowed=wer_allowed,
            seconds=seconds[name],
            passed=not failures,
            failures=failures,
        ))
    return torch_wer, results


@dataclass(frozen=True)
class NoisyParity:
    """A runtime against torch when reads are noisy: every run draws fresh read noise on both
    sides, so frames and transcripts differ by design and only the WER distributions over the
    runs can agree."""

    runtime: str
    wers: list[float]  # percent, one per run
    torch_wers: list[float]
    wer_delta: float  # mean(wers) - mean(torch_wers)
    allowed: float  # the tolerance plus two standard errors of that difference
    passed: bool
    failures: list[str]

    @property
    def wer(self) -> float:
        return float(np.mean(self.wers))

    @property
    def wer_std(self) -> float:
        return float(np.std(self.wers, ddof=1))


def check_noisy_parity(
    reference: SpeechSession, runtimes: dict[str, SpeechSession],
    utterances: Sequence[Utterance], decoder: Decoder, runs: int,
    tolerances: Tolerances = Tolerances(), progress: bool = True,
) -> list[NoisyParity]:
    """`runs` passes over the set through every runtime (each a fresh noise draw); a runtime
    passes when its mean WER is within the single-run allowance (`tolerances.wer_delta`, or
    `wer_tolerance` of the set) plus two standard errors of the difference of the means from
    torch's."""
    if runs < 2:
        raise MhoError("a noisy parity check needs at least 2 runs (--runs)")
    per_run = [check_parity(reference, runtimes, utterances, decoder, tolerances, progress)
               for _ in range(runs)]
    torch_wers = [torch_wer for torch_wer, _ in per_run]
    results = []
    for index, name in enumerate(runtimes):
        wers = [results_of_run[index].wer for _, results_of_run in per_run]
        delta = float(np.mean(wers) - np.mean(torch_wers))
        standard_error = float(np.sqrt((np.var(wers, ddof=1) + np.var(torch_wers, ddof=1)) / runs))
        allowed = per_run[0][1][index].wer_allowed + 2 * standard_error
        failures = [] if abs(delta) <= allowed else [
            f"|mean WER delta| {abs(delta):.3g} > {allowed:.3g}"]
        results.append(NoisyParity(name, wers, torch_wers, delta, allowed, not failures, failures))
    return results


@dataclass(frozen=True)
class CheckReport:
    """`mho check`: one model on one set across runtimes, torch the reference."""

    model: str
    data: str
    decoder: str
    utterances: int
    torch_wer: float | None  # deterministic models only
    results: list[RuntimeParity] | list[NoisyParity]  # NoisyParity when reads are noisy
    coreml: dict | None  # the Core ML program's executor, op counts and off-ANE ops

    @property
    def noisy(self) -> bool:
        return bool(self.results) and isinstance(self.results[0], NoisyParity)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        head = {"model": self.model, "data": self.data, "decoder": self.decoder,
                "utterances": self.utterances}
        if self.noisy:
            torch_wers = self.results[0].torch_wers
            torch = {"runtime": "torch", "wers": torch_wers, "wer": float(np.mean(torch_wers)),
                     "wer_std": float(np.std(torch_wers, ddof=1)), "passed": True}
            entries = [{"runtime": r.runtime, "wers": r.wers, "wer": r.wer,
                        "wer_std": r.wer_std, "wer_delta": r.wer_delta, "allowed": r.allowed,
                        "passed": r.passed, "failures": r.failures} for r in self.results]
            return {**head, "runs": len(torch_wers), "runtimes": [torch, *entries]}
        entries = [{**dataclasses.asdict(r),
                    **(self.coreml if r.runtime in COREML_RUNTIMES else {})}
                   for r in self.results]
        return {**head, "runtimes": [{"runtime": "torch", "wer": self.torch_wer,
                                      "passed": True}, *entries]}


def check_model(
    model: str,
    data: str,
    runtimes: Sequence[str] = ("torch", "ort", "onnx-ref"),
    *,
    onnx_file: Path | None = None,
    coreml_file: Path | None = None,
    simulator=None,  # SimulatorConfig: a memristor model (no onnx_file)
    seed: int = 0,
    chip: Path | None = None,
    decoder: str = "greedy",
    lm: Path | None = None,
    limit: int | None = None,
    tolerances: Tolerances = Tolerances(),
    runs: int | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """`mho check`: parity of ``model`` across ``runtimes`` on the set ``data``. Files not
    given are exported first from the very torch model that is the reference. When the
    model reads with noise, ``runs`` passes (default 3) compare WER distributions."""
    from mho.data.datasets import resolve_dataset
    from mho.exporter.metadata import read_metadata
    from mho.workflows.sessions import parity_sessions

    data_name, utterances = resolve_dataset(data)
    utterances = utterances[:limit] if limit else utterances
    if simulator is not None:
        memristor = simulator.to_dict()
    elif chip is not None:
        from mho.simulator.mapping import chip_config

        memristor = chip_config(chip).to_dict()
    elif onnx_file is not None:
        if not Path(onnx_file).is_file():
            raise MhoError(f"no such ONNX file: {onnx_file}")
        memristor = read_metadata(onnx_file).memristor
    else:
        memristor = None
    noisy = memristor is not None and memristor.get("noise", "off") != "off"
    if runs is not None and not noisy:
        raise MhoError("--runs is for models that read with noise; this one is deterministic")
    with tempfile.TemporaryDirectory(prefix="mho-check-") as scratch:
        reference, others, search = parity_sessions(
            model, list(runtimes), onnx_file=onnx_file, coreml_file=coreml_file,
            simulator=simulator, seed=seed, chip=chip, decoder=decoder, lm=lm,
            scratch=Path(scratch), progress=progress, threads=threads)
        if noisy:
            results = check_noisy_parity(reference, others, utterances, search, runs or 3,
                                         tolerances, progress=progress)
            return CheckReport(model, data_name, decoder, len(utterances), None, results, None)
        torch_wer, results = check_parity(reference, others, utterances, search, tolerances,
                                          progress=progress)
        coreml = None
        coreml_runtimes = [r for r in others if r in COREML_RUNTIMES]
        if coreml_runtimes:  # what the program holds, and what may leave the Neural Engine
            from mho.exporter.coreml import off_neural_engine

            session = others[coreml_runtimes[0]].session
            ops = session.op_counts()
            coreml = {"executor": session.executor, "ops": ops,
                      "off_neural_engine": off_neural_engine(ops)}
    return CheckReport(model, data_name, decoder, len(utterances), torch_wer, results, coreml)
