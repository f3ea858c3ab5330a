#!/usr/bin/env bash
# Pack the QAT checkpoints that recipes/train_models.sh made into mho/assets/models, each
# with a model card scored on the dev set and both held-out-voice test sets (greedy + LM).
#
# Usage: recipes/pack_models.sh [RUNS_DIR] [CORPUS_DIR]   (defaults: runs/models data/corpus)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-runs/models}"
CORPUS="${2:-data/corpus}"
for pe in none sinusoidal+linear learnable+linear sinusoidal learnable; do
    for bits in 8 4; do
        .venv/bin/mho models pack "$RUNS/$pe/w$bits/checkpoint.pt" --name "conformer-${pe/+/-}-w$bits" \
            --eval-data "$CORPUS/dev.jsonl" --eval-data "$CORPUS/test-flite-slt.jsonl" \
            --eval-data "$CORPUS/test-festival-slt.jsonl"
    done
done
