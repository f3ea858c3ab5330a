"""Training examples: log-mel features computed once and kept in memory, plus CTC labels.

Features are cached on disk beside the manifest (``<manifest dir>/features/``), keyed by a
hash of the utterance ids and texts and the feature config, so the many training runs of
a recipe compute them once.
"""

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mho.data.audio import load_audio
from mho.data.features import FeatureConfig, LogMel
from mho.data.lexicon import Lexicon, Vocabulary
from mho.data.manifest import Utterance
from mho.errors import AudioError


@dataclass
class FeatureSet:
    """Features of a whole set: fp16 keeps 20 h of 80-dim frames at about 1.2 GB."""

    utterances: list[Utterance]
    features: list[torch.Tensor]  # each [T, 80] float16
    labels: list[torch.Tensor]  # each [L] int64 phone ids

    @classmethod
    def build(
        cls, utterances: list[Utterance], lexicon: Lexicon, vocabulary: Vocabulary, *,
        desc: str = "features", progress: bool = True,
    ) -> "FeatureSet":
        log_mel = LogMel()
        features, labels = [], []
        with torch.inference_mode():
            for utt in tqdm(utterances, desc=desc, unit="utt", disable=not progress, leave=False):
                try:
                    waveform = torch.from_numpy(load_audio(utt.audio))
                except AudioError as error:
                    raise AudioError(f"utterance {utt.id}: {error}") from None
                features.append(log_mel(waveform[None])[0].to(torch.float16))
                labels.append(torch.tensor(vocabulary.encode(lexicon.sentence_to_phones(utt.text))))
        return cls(list(utterances), features, labels)

    @classmethod
    def cached(
        cls, utterances: list[Utterance], lexicon: Lexicon, vocabulary: Vocabulary,
        cache_dir: Path, *, desc: str = "features", progress: bool = True,
    ) -> "FeatureSet":
        """``build``, or read what an earlier build of the same utterances wrote."""
        key = hashlib.sha256(repr((asdict(FeatureConfig()), vocabulary.tokens, [
            (u.id, u.text) for u in utterances])).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{desc.replace(' ', '-')}-{key}.pt"
        if path.is_file():
            stored = torch.load(path, weights_only=True)
            return cls(list(utterances), stored["features"], stored["labels"])
        built = cls.build(utterances, lexicon, vocabulary, desc=desc, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Per-process name: parallel runs may build the same cache at once.
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch.save({"features": built.features, "labels": built.labels}, partial)
        os.replace(partial, path)
        return built

    def __len__(self) -> int:
        return len(self.features)

    @property
    def durations(self) -> list[float]:
        return [f.shape[0] / 100 for f in self.features]  # 100 frames per second

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad a batch: features [B, T, 80] float32, lengths [B], labels [B, L], label lengths."""
        feats = [self.features[i].float() for i in indices]
        labels = [self.labels[i] for i in indices]
        return {
            "features": torch.nn.utils.rnn.pad_sequence(feats, batch_first=True),
            "lengths": torch.tensor([f.shape[0] for f in feats]),
            "labels": torch.nn.utils.rnn.pad_sequence(labels, batch_first=True),
            "label_lengths": torch.tensor([len(x) for x in labels]),
        }
