#!/usr/bin/env bash
# Pack the QAT checkpoints that recipes/train_models.sh made into mho/assets/models, each
# with a model card scored on the two shipped held-out-voice test sets (greedy + LM); the
# card's dev WER is the last training epoch's (greedy, first 200 dev utterances).
#
# Usage: recipes/pack_models.sh [RUNS_DIR]   (default: runs/models)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-runs/models}"
for pe in none sinusoidal+linear learnable+linear sinusoidal learnable; do
    for bits in 8 4; do
        .venv/bin/mho models pack "$RUNS/$pe/w$bits/checkpoint.pt" --name "conformer-${pe/+/-}-w$bits" \
            --eval-data flite-slt --eval-data festival-slt
    done
done
