"""Speech data: corpus building, manifests, the LibriSpeech reader, audio, lexicon, log-mel
features, feature and waveform sets (and their archives), and the word LM."""

from mho.data.audio import SAMPLE_RATE, load_audio
from mho.data.datasets import resolve_dataset
from mho.data.features import FeatureConfig, LogMel
from mho.data.lexicon import PHONE_VOCABULARY, Lexicon, Vocabulary
from mho.data.manifest import Utterance, load_utterance_audio, read_manifest, write_manifest

__all__ = [
    "PHONE_VOCABULARY",
    "SAMPLE_RATE",
    "FeatureConfig",
    "Lexicon",
    "LogMel",
    "Utterance",
    "Vocabulary",
    "load_audio",
    "load_utterance_audio",
    "read_manifest",
    "resolve_dataset",
    "write_manifest",
]
