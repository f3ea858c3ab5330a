"""Corpus building, manifests, the LibriSpeech reader, lexicon and features."""
