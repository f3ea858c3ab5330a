"""Error rates of transcripts against references: word (WER) and character (CER), over
normalized text, with jiwer's alignment."""

import jiwer

from mho.data.text import normalize_transcript


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus-level (WER, CER) in percent over normalized texts."""
    refs = [normalize_transcript(t) for t in references]
    hyps = [normalize_transcript(t) for t in hypotheses]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return 100.0 * words.wer, 100.0 * chars.cer
