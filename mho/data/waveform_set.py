"""Training examples for waveform models: 8-bit mu-law audio kept in memory, plus labels.

mu-law (ITU G.711's curve, mu = 255) keeps 16 kHz speech at 8 bits per sample with about
38 dB signal-to-quantization-noise ratio at any level, far cleaner than what the models
learn to ignore; 20 h of audio take 1.15 GB in memory. A waveform *archive*
(``mho data waveforms``) carries a set without its corpus, like the feature archive.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from mho.data.audio import SAMPLE_RATE
from mho.data.feature_set import labelled_audio
from mho.data.lexicon import Lexicon, Vocabulary
from mho.data.manifest import Utterance
from mho.errors import MhoError
from mho.io import load_tagged, save_tagged

ARCHIVE_FORMAT = "mho-waveforms-1"
MU = 255.0


def mu_law_encode(waveform: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 codes."""
    compressed = waveform.sign() * torch.log1p(MU * waveform.abs().clamp(max=1)) / torch.log1p(
        torch.tensor(MU))
    return ((compressed + 1) / 2 * MU).round().to(torch.uint8)


def mu_law_decode(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes -> float32 [-1, 1]."""
    compressed = codes.float() / MU * 2 - 1
    return compressed.sign() * ((1 + MU) ** compressed.abs() - 1) / MU


@dataclass
class WaveformSet:
    """Same interface as `FeatureSet` (utterances, labels, durations, collate), waveforms
    instead of features. Utterances the lexicon cannot spell, or shorter than ``min_samples``
    (the model's receptive field, e.g. 400 samples), are left out (``skipped``)."""

    utterances: list[Utterance]
    codes: list[torch.Tensor]  # each [S] uint8 mu-law
    labels: list[torch.Tensor]  # each [L] int64 phone ids
    skipped: int = 0

    @classmethod
    def build(cls, utterances: list[Utterance], lexicon: Lexicon, vocabulary: Vocabulary, *,
              min_samples: int, desc: str = "waveforms", progress: bool = True
              ) -> "WaveformSet":
        kept, codes, labels = [], [], []
        for utt, waveform, label in labelled_audio(utterances, lexicon, vocabulary, desc=desc,
                                                   progress=progress,
                                                   min_samples=min_samples):
            codes.append(mu_law_encode(waveform))
            labels.append(label)
            kept.append(utt)
        return cls(kept, codes, labels, skipped=len(utterances) - len(kept))

    def save_archive(self, path: str | Path) -> None:
        save_tagged(path, ARCHIVE_FORMAT, {
            "sample_rate": SAMPLE_RATE,
            "ids": [u.id for u in self.utterances], "texts": [u.text for u in self.utterances],
            "lengths": torch.tensor([len(c) for c in self.codes]),
            "labels": self.labels, "codes": torch.cat(self.codes),
        })

    @classmethod
    def load_archive(cls, path: str | Path) -> "WaveformSet":
        path = Path(path)
        stored = load_tagged(path, ARCHIVE_FORMAT, "waveform archive", " (mho data waveforms)")
        if stored["sample_rate"] != SAMPLE_RATE:
            raise MhoError(f"{path} holds {stored['sample_rate']} Hz audio, not {SAMPLE_RATE}")
        lengths = stored["lengths"].tolist()
        utterances = [Utterance(id=i, audio=path, duration=n / SAMPLE_RATE, text=t)
                      for i, t, n in zip(stored["ids"], stored["texts"], lengths, strict=True)]
        return cls(utterances, list(stored["codes"].split(lengths)), stored["labels"])

    def select(self, ids: set[str]) -> "WaveformSet":
        keep = [i for i, u in enumerate(self.utterances) if u.id in ids]
        return WaveformSet([self.utterances[i] for i in keep], [self.codes[i] for i in keep],
                           [self.labels[i] for i in keep], skipped=self.skipped)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def durations(self) -> list[float]:
        return [len(c) / SAMPLE_RATE for c in self.codes]

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad a batch: inputs [B, S] float32, lengths [B] samples, labels [B, L], lengths."""
        waves = [mu_law_decode(self.codes[i]) for i in indices]
        labels = [self.labels[i] for i in indices]
        return {
            "inputs": torch.nn.utils.rnn.pad_sequence(waves, batch_first=True),
            "lengths": torch.tensor([len(w) for w in waves]),
            "labels": torch.nn.utils.rnn.pad_sequence(labels, batch_first=True),
            "label_lengths": torch.tensor([len(x) for x in labels]),
        }


def write_waveform_archive(manifest: Path, out: Path, *, min_samples: int,
                           hours: float | None = None, count: int | None = None,
                           seed: int = 0, progress: bool = True) -> WaveformSet:
    """`mho data waveforms`: the manifest's utterances (a seeded subset of about ``hours``,
    then the first ``count``) at least ``min_samples`` long, as a mu-law archive at ``out``."""
    from mho.data.datasets import seeded_hours
    from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
    from mho.data.manifest import read_manifest

    utterances = read_manifest(manifest)
    if hours is not None:
        utterances = seeded_hours(utterances, hours, seed)
    waveform_set = WaveformSet.build(utterances[:count], Lexicon.from_cmudict(),
                                     PHONE_VOCABULARY, min_samples=min_samples,
                                     desc=f"{Path(manifest).stem} waveforms", progress=progress)
    waveform_set.save_archive(out)
    return waveform_set
