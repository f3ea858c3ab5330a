"""The train tests' corpus: a few real (espeak-ng) utterances, and a tiny config over it."""

import shutil
import subprocess
from dataclasses import replace

import pytest

from mho.data.manifest import Utterance, write_manifest
from mho.train.config import DataConfig, TrainConfig

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran into the house",
    "she sells shells by the shore",
    "we read a good book today",
    "the rain fell all night long",
    "they went home after the game",
]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is installed by `make setup`")
    root = tmp_path_factory.mktemp("corpus")
    utterances = []
    for i, text in enumerate(SENTENCES):
        wav = root / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
        subprocess.run(["sox", "-G", str(wav), "-r", "16000", str(root / f"{i}.flac")], check=True)
        utterances.append(Utterance(str(i), root / f"{i}.flac", 2.0, text))
    write_manifest(root / "train.jsonl", utterances)
    write_manifest(root / "dev.jsonl", utterances[:2])
    return root


def tiny_config(corpus, **changes) -> TrainConfig:
    config = TrainConfig(
        size="tiny", epochs=2, max_batch_seconds=6.0, max_batch_size=2, peak_lr=3e-3,
        data=DataConfig(train=corpus / "train.jsonl", dev=corpus / "dev.jsonl"), threads=1,
    )
    return replace(config, **changes)
