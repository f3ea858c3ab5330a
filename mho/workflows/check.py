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

import time
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
from tqdm import tqdm

from mho.data.manifest import Utterance, load_utterance_audio
from mho.decoding.decoders import Decoder, GreedyDecoder
from mho.decoding.scoring import error_rates
from mho.errors import MhoError


@dataclass(frozen=True)
class Tolerances:
    mean_abs: float = 0.5  # mean |log-prob difference| over all frames of the set
    transcript_cer: float = 5.0  # percent: greedy transcripts vs torch's
    wer_delta: float = 2.0  # absolute WER points vs torch's


@dataclass(frozen=True)
class RuntimeParity:
    runtime: str
    max_abs: float  # largest |log-prob difference| on the set
    mean_abs: float  # mean over all frames and tokens
    frames_agree: float  # fraction of frames with the same best token
    transcript_cer: float  # percent, greedy transcripts vs torch's greedy transcripts
    wer: float  # percent, with the chosen decoder
    wer_delta: float  # wer - torch's wer
    seconds: float  # inside the runtime (decoding excluded)
    passed: bool
    failures: list[str]  # which tolerances it exceeded


def check_parity(
    reference,  # callable: waveform [S] -> log-probs [T', V] (torch)
    runtimes: dict[str, object],  # name -> callable like `reference`
    utterances: Sequence[Utterance],
    decoder: Decoder,
    tolerances: Tolerances = Tolerances(),
    progress: bool = True,
) -> tuple[float, list[RuntimeParity]]:
    """Torch's WER and one RuntimeParity per entry of `runtimes`."""
    greedy = decoder if isinstance(decoder, GreedyDecoder) else GreedyDecoder.from_assets()
    names = ["torch", *runtimes]
    calls = {"torch": reference, **runtimes}
    hypotheses = {name: [] for name in names}
    greedy_texts = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    diffs = {name: [] for name in runtimes}  # per utterance: (max, sum, count, agreeing frames)
    for utt in tqdm(utterances, desc="parity", unit="utt", disable=not progress, leave=False):
        waveform = load_utterance_audio(utt)
        outputs = {}
        for name in names:
            started = time.perf_counter()
            outputs[name] = np.asarray(calls[name](waveform), dtype=np.float64)  # [T', V]
            seconds[name] += time.perf_counter() - started
            hypotheses[name].append(decoder.decode(outputs[name].astype(np.float32)))
            greedy_texts[name].append(greedy.decode(outputs[name].astype(np.float32)))
        for name in runtimes:
            difference = np.abs(outputs[name] - outputs["torch"])
            agree = outputs[name].argmax(-1) == outputs["torch"].argmax(-1)
            diffs[name].append((difference.max(), difference.sum(), difference.size, agree.mean()))
    references = [u.text for u in utterances]
    torch_wer, _ = error_rates(references, hypotheses["torch"])
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
                ("|WER delta|", abs(wer - torch_wer), tolerances.wer_delta),
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
    reference, runtimes: dict[str, object], utterances: Sequence[Utterance], decoder: Decoder,
    runs: int, tolerances: Tolerances = Tolerances(), progress: bool = True,
) -> list[NoisyParity]:
    """`runs` passes over the set through every runtime (each a fresh noise draw); a runtime
    passes when its mean WER is within `tolerances.wer_delta` plus two standard errors of
    the difference of the means from torch's."""
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
        allowed = tolerances.wer_delta + 2 * standard_error
        failures = [] if abs(delta) <= allowed else [
            f"|mean WER delta| {abs(delta):.3g} > {allowed:.3g}"]
        results.append(NoisyParity(name, wers, torch_wers, delta, allowed, not failures, failures))
    return results
