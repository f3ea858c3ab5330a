"""Training examples augmented on the fly: waveforms in (device) memory, features per batch.

A conformer trained with ``augment`` in its config reads its train set as waveforms (an
8-bit mu-law archive of ``mho data waveforms`` or a manifest) and turns each batch into
log-mel features through `mho.data.augment.AugmentedFeatures` on the training device, with
a seed per batch, so every epoch hears other speakers and rooms and a resumed run hears
exactly what an uninterrupted one would have.
"""

import torch

from mho.data.augment import AugmentConfig, AugmentedFeatures
from mho.data.waveform_set import WaveformSet, mu_law_decode


class AugmentedWaveformSet:
    """`FeatureSet`'s interface (utterances, labels, durations, len, collate) over a
    `WaveformSet` whose features are augmented per batch; ``collate`` takes a seed.

    The mu-law codes of the whole set move to ``device`` once (20 h: 1.15 GB), so a batch
    costs no host-to-device copy of audio.
    """

    def __init__(self, waveforms: WaveformSet, config: AugmentConfig,
                 device: torch.device | str = "cpu") -> None:
        self.utterances = waveforms.utterances
        self.labels = waveforms.labels
        self.skipped = waveforms.skipped
        self.device = torch.device(device)
        lengths = [len(c) for c in waveforms.codes]
        self._codes = torch.cat(waveforms.codes).to(self.device)  # [sum S] uint8
        starts = torch.tensor([0, *lengths]).cumsum(0).tolist()
        self._spans = list(zip(starts[:-1], starts[1:], strict=True))
        self.augment = AugmentedFeatures(config).to(self.device)
        self._durations = waveforms.durations

    def __len__(self) -> int:
        return len(self._spans)

    @property
    def durations(self) -> list[float]:
        """Seconds before augmentation (speed changes them by at most its range)."""
        return self._durations

    def waveform(self, index: int) -> torch.Tensor:
        """Utterance ``index`` as float32 [S] on the set's device."""
        start, end = self._spans[index]
        return mu_law_decode(self._codes[start:end])

    @torch.no_grad()
    def clean_features(self, indices: list[int]) -> list[torch.Tensor]:
        """Unaugmented features (each [T, 80] on the CPU): for the normalization statistics."""
        log_mel = self.augment.log_mel
        return [log_mel(self.waveform(i)[None])[0].cpu() for i in indices]

    def collate(self, indices: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
        """A batch like `FeatureSet.collate`, features augmented with ``seed`` and left on the
        set's device: inputs [B, T, 80], lengths [B] frames, labels [B, L], label lengths."""
        features, frames = self.augment([self.waveform(i) for i in indices], seed)
        labels = [self.labels[i] for i in indices]
        return {
            "inputs": features,
            "lengths": frames,
            "labels": torch.nn.utils.rnn.pad_sequence(labels, batch_first=True),
            "label_lengths": torch.tensor([len(x) for x in labels]),
        }

