"""Training examples: log-mel features computed once and kept in memory, plus CTC labels.

Features are cached on disk beside the manifest (``<manifest dir>/features/``), keyed by a
hash of the utterance ids and texts and the feature config, so the many training runs of
a recipe compute them once.

A feature *archive* (``mho data features``) carries a whole set without its audio, at 8
bits per value (half the cache's size), so training can run on a machine that has no
corpus, e.g. a GPU box reachable only with small uploads.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mho.data.features import FRAMES_PER_SECOND, FeatureConfig, LogMel
from mho.data.lexicon import Lexicon, Vocabulary
from mho.data.manifest import Utterance, load_utterance_audio
from mho.errors import MhoError
from mho.io import atomic_path, load_tagged, save_tagged

ARCHIVE_FORMAT = "mho-features-1"
ARCHIVE_LEVELS = 255  # uint8 codes per mel bin: about 0.09 log units per step


def labelled_audio(
    utterances: list[Utterance], lexicon: Lexicon, vocabulary: Vocabulary, *, desc: str,
    progress: bool = True, min_samples: int = 0,
) -> Iterator[tuple[Utterance, torch.Tensor, torch.Tensor]]:
    """(utterance, waveform [S], phone labels [L]) for every utterance the lexicon can spell
    and at least `min_samples` long, with a progress bar; MhoError when none is."""
    yielded = 0
    for utt in tqdm(utterances, desc=desc, unit="utt", disable=not progress, leave=False):
        try:
            phones = lexicon.sentence_to_phones(utt.text)
        except MhoError:
            continue
        waveform = torch.from_numpy(load_utterance_audio(utt))
        if len(waveform) < min_samples:
            continue
        yielded += 1
        yield utt, waveform, torch.tensor(vocabulary.encode(phones))
    if not yielded:
        raise MhoError(f"{desc}: no utterance can be spelled with the lexicon")


@dataclass
class FeatureSet:
    """Features of a whole set: fp16 keeps 20 h of 80-dim frames at about 1.2 GB.

    Utterances with a word the lexicon cannot spell are left out (``skipped`` counts them):
    a real corpus always has a few, and one must not stop a training run.
    """

    utterances: list[Utterance]
    features: list[torch.Tensor]  # each [T, 80] float16
    labels: list[torch.Tensor]  # each [L] int64 phone ids
    skipped: int = 0

    @classmethod
    def build(
        cls, utterances: list[Utterance], lexicon: Lexicon, vocabulary: Vocabulary, *,
        desc: str = "features", progress: bool = True,
    ) -> "FeatureSet":
        log_mel = LogMel()
        kept, features, labels = [], [], []
        with torch.inference_mode():
            for utt, waveform, label in labelled_audio(utterances, lexicon, vocabulary,
                                                       desc=desc, progress=progress):
                features.append(log_mel(waveform[None])[0].to(torch.float16))
                labels.append(label)
                kept.append(utt)
        return cls(kept, features, labels, skipped=len(utterances) - len(kept))

    @classmethod
    def cached(
        cls, utterances: list[Utterance], lexicon: Lexicon, vocabulary: Vocabulary,
        cache_dir: Path, *, desc: str = "features", progress: bool = True,
    ) -> "FeatureSet":
        """``build``, or read what an earlier build of the same utterances wrote. The key
        covers ids, texts and each audio file's path, size and modification time."""
        def fingerprint(utt: Utterance) -> tuple:
            stat = utt.audio.stat()
            return utt.id, utt.text, str(utt.audio), stat.st_size, stat.st_mtime_ns

        fingerprints = [fingerprint(u) for u in utterances]
        key_source = repr((asdict(FeatureConfig()), vocabulary.tokens, fingerprints))
        key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{desc.replace(' ', '-')}-{key}.pt"
        if path.is_file():
            stored = torch.load(path, weights_only=True)
            kept = set(stored["ids"])
            return cls([u for u in utterances if u.id in kept], stored["features"],
                       stored["labels"], skipped=len(utterances) - len(kept))
        built = cls.build(utterances, lexicon, vocabulary, desc=desc, progress=progress)
        with atomic_path(path) as partial:
            torch.save({"features": built.features, "labels": built.labels,
                        "ids": [u.id for u in built.utterances]}, partial)
        return built

    def select(self, ids: set[str]) -> "FeatureSet":
        """The utterances whose id is in ``ids``, in this set's order."""
        keep = [i for i, u in enumerate(self.utterances) if u.id in ids]
        return FeatureSet([self.utterances[i] for i in keep], [self.features[i] for i in keep],
                          [self.labels[i] for i in keep], skipped=self.skipped)

    def save_archive(self, path: str | Path) -> None:
        """Write features as uint8 codes on a per-bin linear grid spanning each bin's range
        (rounding error below 0.05 log units, far under the features' spread of about 5)."""
        frames = torch.cat(self.features).float()  # [N, 80]
        low, high = frames.amin(dim=0), frames.amax(dim=0)  # [80]
        step = (high - low).clamp(min=1e-6) / ARCHIVE_LEVELS
        codes = ((frames - low) / step).round().clamp(0, ARCHIVE_LEVELS).to(torch.uint8)
        save_tagged(path, ARCHIVE_FORMAT, {
            "feature_config": asdict(FeatureConfig()),
            "ids": [u.id for u in self.utterances], "texts": [u.text for u in self.utterances],
            "lengths": torch.tensor([len(f) for f in self.features]),
            "labels": self.labels, "low": low, "step": step, "codes": codes,
        })

    @classmethod
    def load_archive(cls, path: str | Path) -> "FeatureSet":
        path = Path(path)
        stored = load_tagged(path, ARCHIVE_FORMAT, "feature archive", " (mho data features)")
        if stored["feature_config"] != asdict(FeatureConfig()):
            raise MhoError(f"{path} holds features of another feature config")
        frames = (stored["codes"].float() * stored["step"] + stored["low"]).to(torch.float16)
        lengths = stored["lengths"].tolist()
        utterances = [
            Utterance(id=i, audio=path, duration=n / FRAMES_PER_SECOND, text=t)
            for i, t, n in zip(stored["ids"], stored["texts"], lengths, strict=True)
        ]
        return cls(utterances, list(frames.split(lengths)), stored["labels"])

    def __len__(self) -> int:
        return len(self.features)

    @property
    def durations(self) -> list[float]:
        return [f.shape[0] / FRAMES_PER_SECOND for f in self.features]

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad a batch: inputs [B, T, 80] float32 features, lengths [B], labels [B, L], label
        lengths."""
        feats = [self.features[i].float() for i in indices]
        labels = [self.labels[i] for i in indices]
        return {
            "inputs": torch.nn.utils.rnn.pad_sequence(feats, batch_first=True),
            "lengths": torch.tensor([f.shape[0] for f in feats]),
            "labels": torch.nn.utils.rnn.pad_sequence(labels, batch_first=True),
            "label_lengths": torch.tensor([len(x) for x in labels]),
        }


def write_feature_archive(manifest: Path, out: Path, *, count: int | None = None,
                          progress: bool = True) -> FeatureSet:
    """`mho data features`: the manifest's (first ``count``) utterances as an 8-bit feature
    archive at ``out``, computed once into the cache beside the manifest."""
    from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
    from mho.data.manifest import read_manifest

    utterances = read_manifest(manifest)[:count]
    feature_set = FeatureSet.cached(utterances, Lexicon.from_cmudict(), PHONE_VOCABULARY,
                                    Path(manifest).parent / "features",
                                    desc=f"{Path(manifest).stem} features", progress=progress)
    feature_set.save_archive(out)
    return feature_set
