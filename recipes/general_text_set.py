"""Synthesize a small test set of general English text (not the corpus's, not in any LM).

Reads the first COUNT sentences of the general held-out split
(:func:`mho.data.general_text.general_split`, seed 0) with the held-out test voices
(flite ``slt`` and festival ``cmu_us_slt_arctic_hts``) into OUT/general-flite-slt.jsonl and
OUT/general-festival-slt.jsonl, for `mho eval --data`. No model trains on these sentences.

Usage: python recipes/general_text_set.py OUT [COUNT]   (default COUNT 50)
"""

import sys
from pathlib import Path

from mho.data.general_text import general_split
from mho.data.manifest import Utterance, write_manifest
from mho.data.synth import SynthJob, Voice, require_synthesizers, synthesize

VOICES = {
    "flite-slt": Voice("flite", "slt"),
    "festival-slt": Voice("festival", "voice_cmu_us_slt_arctic_hts"),
}


def main(out: Path, count: int) -> None:
    sentences = general_split()["test"][:count]
    require_synthesizers(VOICES.values())
    for name, voice in VOICES.items():
        audio = out / f"general-{name}"
        audio.mkdir(parents=True, exist_ok=True)
        jobs = [SynthJob(f"general-{name}-{i:03d}", text, voice, audio / f"{i:03d}.flac")
                for i, text in enumerate(sentences)]
        durations = synthesize(jobs)
        write_manifest(out / f"general-{name}.jsonl",
                       [Utterance(job.id, job.out.resolve(), durations[job.id], job.text)
                        for job in jobs])
        print(f"{name}: {len(jobs)} utterances, {sum(durations.values()) / 60:.1f} min")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 50)
