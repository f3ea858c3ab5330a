"""Word and character error rates (jiwer) and real-time factor of a recognizer on a set."""

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mho.data.audio import SAMPLE_RATE
from mho.data.datasets import resolve_dataset
from mho.data.manifest import Utterance, load_utterance_audio
from mho.decoding.scoring import error_rates
from mho.runtime.recognizer import Transcriber, load_recognizer


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
    gain_db: float = 0.0  # every waveform scaled by this before recognition (then clipped)

    def summary(self) -> dict:
        """Everything but the per-utterance transcripts, for tables and --json."""
        record = asdict(self)
        record.pop("hypotheses")
        return record


def evaluate(
    recognizer: Transcriber,
    utterances: Iterable[Utterance],
    *,
    data_name: str,
    progress: bool = True,
    batch_size: int = 1,
    gain_db: float = 0.0,
) -> EvalResult:
    """Transcribe every utterance and score against its reference text. batch_size > 1: for
    recognizers with `transcribe_batch` (every mho model and exported file), stream the set
    through in padded batches of similar lengths, as a server would. ``gain_db``: play every
    utterance that much louder (or quieter), clipped to [-1, 1] as a recorder would, to
    measure how much a recognizer depends on the input level."""
    utterances = list(utterances)
    batched = batch_size > 1 and hasattr(recognizer, "transcribe_batch")
    # similar lengths together: less padding per batch
    order = sorted(utterances, key=lambda u: u.duration) if batched else utterances
    size = batch_size if batched else 1
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    hypotheses: dict[str, str] = {}
    audio_seconds = compute_seconds = 0.0
    with tqdm(total=len(utterances), desc=f"{recognizer.name} on {data_name}", unit="utt",
              disable=not progress, leave=False) as bar:
        for batch in batches:
            waveforms = [load_utterance_audio(utt) for utt in batch]
            if gain_db:
                waveforms = [np.clip(w * 10.0 ** (gain_db / 20.0), -1.0, 1.0).astype(w.dtype)
                             for w in waveforms]
            start = time.perf_counter()
            if batched:
                texts = recognizer.transcribe_batch(waveforms)
            else:
                texts = [recognizer.transcribe(w) for w in waveforms]
            compute_seconds += time.perf_counter() - start
            audio_seconds += sum(w.size for w in waveforms) / SAMPLE_RATE
            hypotheses.update((utt.id, text) for utt, text in zip(batch, texts, strict=True))
            bar.update(len(batch))
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
        gain_db=gain_db,
    )


def evaluate_models(
    models: Sequence[str],
    data: Sequence[str],
    *,
    decoder: str = "lm",
    lm: Path | None = None,
    runtime: str | None = None,
    batch_size: int = 1,
    threads: int | None = None,
    progress: bool = False,
    gain_db: float = 0.0,
    beam_size: int | None = None,
) -> list[EvalResult]:
    """`mho eval`: each model (peer, shipped, checkpoint, Hugging Face directory or exported
    file) on each set (shipped name, manifest or LibriSpeech directory). Every set is read
    before any model is loaded, so a bad set fails fast. ``threads``: intra-op threads;
    ``beam_size``: the LM search's (default: mho's, or a bundle's own)."""
    sets = [resolve_dataset(spec) for spec in data]
    results = []
    for model in models:
        recognizer = load_recognizer(model, decoder=decoder, runtime=runtime, threads=threads,
                                     lm=lm, beam_size=beam_size)
        for name, utterances in sets:
            results.append(evaluate(recognizer, utterances, data_name=name, progress=progress,
                                    batch_size=batch_size, gain_db=gain_db))
    return results
