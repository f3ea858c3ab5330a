"""Inference: sessions per runtime, CTC decoding, evaluation and parity checks."""
