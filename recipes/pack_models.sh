#!/usr/bin/env bash
# Pack the QAT checkpoints that recipes/train_models.sh made into mho/assets/models, each
# with a model card scored (greedy + LM) on the held-out-voice test sets: the two shipped
# 50-utterance sets and the corpus's full 400-utterance ones; the card's dev WER is the last
# training epoch's (greedy, first 200 dev utterances).
#
# Usage: recipes/pack_models.sh [RUNS_DIR] [OUT_DIR]   (default: runs/models, mho/assets/models)
# Environment: EVAL_DATA (default: the four test sets; empty: pack without scoring, as
#   on a GPU machine that lacks the decoders; score later by packing the packed files again),
#   MHO (the command, default .venv/bin/mho).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-runs/models}"
OUT_DIR="${2:-mho/assets/models}"
MHO="${MHO:-.venv/bin/mho}"
eval_args=()
DEFAULT_SETS="flite-slt festival-slt data/corpus/test-flite-slt.jsonl data/corpus/test-festival-slt.jsonl"
for set in ${EVAL_DATA-$DEFAULT_SETS}; do eval_args+=(--eval-data "$set"); done
for pe in none sinusoidal+linear learnable+linear sinusoidal learnable; do
    for bits in 8 4; do
        $MHO models pack "$RUNS/$pe/w$bits/checkpoint.pt" --name "conformer-${pe/+/-}-w$bits" \
            --out-dir "$OUT_DIR" "${eval_args[@]}"
    done
done
