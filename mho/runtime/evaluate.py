"""Word and character error rates (jiwer) and real-time factor of a recognizer on a set."""

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import jiwer
from tqdm import tqdm

from mho.data.audio import SAMPLE_RATE
from mho.data.manifest import Utterance, load_utterance_audio
from mho.data.text import normalize_transcript
from mho.runtime.recognizer import Recognizer


@dataclass(frozen=True)
class EvalResult:
    model: str
    data: str
    runtime: str
    decoder: str
    wer: float  # percent
    cer: float  # percent
    utterances: int
    audio_seconds: float
    compute_seconds: float  # time spent inside the recognizer, audio loading excluded
    rtf: float  # compute_seconds / audio_seconds: below 1 is faster than real time
    hypotheses: dict[str, str]  # utterance id -> transcript

    def summary(self) -> dict:
        """Everything but the per-utterance transcripts, for tables and --json."""
        record = asdict(self)
        record.pop("hypotheses")
        return record


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus-level (WER, CER) in percent over normalized texts."""
    refs = [normalize_transcript(t) for t in references]
    hyps = [normalize_transcript(t) for t in hypotheses]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return 100.0 * words.wer, 100.0 * chars.cer


def evaluate(
    recognizer: Recognizer,
    utterances: Iterable[Utterance],
    *,
    data_name: str,
    progress: bool = True,
) -> EvalResult:
    """Transcribe every utterance and score against its reference text."""
    utterances = list(utterances)
    hypotheses: dict[str, str] = {}
    audio_seconds = compute_seconds = 0.0
    for utt in tqdm(utterances, desc=f"{recognizer.name} on {data_name}", disable=not progress,
                    unit="utt", leave=False):
        waveform = load_utterance_audio(utt)
        start = time.perf_counter()
        hypotheses[utt.id] = recognizer.transcribe(waveform)
        compute_seconds += time.perf_counter() - start
        audio_seconds += waveform.size / SAMPLE_RATE
    wer, cer = error_rates([u.text for u in utterances], [hypotheses[u.id] for u in utterances])
    return EvalResult(
        model=recognizer.name,
        data=data_name,
        runtime=recognizer.runtime,
        decoder=recognizer.decoder,
        wer=wer,
        cer=cer,
        utterances=len(utterances),
        audio_seconds=audio_seconds,
        compute_seconds=compute_seconds,
        rtf=compute_seconds / max(audio_seconds, 1e-9),
        hypotheses=hypotheses,
    )
