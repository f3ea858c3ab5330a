"""Perplexity of LM directories on the corpus dev sentences and the general held-out text.

Usage: python recipes/lm_perplexity.py LM_DIR...   (``shipped`` names mho/assets/lm)
Prints one markdown row per LM: size, perplexity and OOV rate on both texts.
"""

import sys
from pathlib import Path

from mho.data.general_text import general_split
from mho.data.lm import LM_ASSETS, LM_FILE, perplexity
from mho.data.text import corpus_sentences

texts = {
    "corpus dev": corpus_sentences(0)["dev"],
    "general held-out": general_split()["test"],
}
print("| LM | lm.bin MB | " + " | ".join(f"{name} ppl (OOV %)" for name in texts) + " |")
print("| --- | ---: | " + " | ".join("---:" for _ in texts) + " |")
for name in sys.argv[1:]:
    lm_dir = LM_ASSETS if name == "shipped" else Path(name)
    cells = []
    for sentences in texts.values():
        result = perplexity(lm_dir, sentences)
        cells.append(f"{result.perplexity:.0f} ({100 * result.oov / result.words:.1f})")
    size = (lm_dir / LM_FILE).stat().st_size / 1e6
    print(f"| {name} | {size:.1f} | " + " | ".join(cells) + " |")
