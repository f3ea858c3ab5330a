#!/usr/bin/env bash
# Re-score every shipped model's card in place (its .pt file is kept byte for byte): greedy
# and LM results on the two shipped 50-utterance sets and the corpus's 400-utterance ones,
# with the current decoder settings. Run it after a change to the decoders or the LM.
#
# Usage: recipes/rescore_models.sh [NAME...]   (default: every shipped model)
# Environment: EVAL_DATA (default: the four test sets), CORPUS (default: data/corpus, from
#   `make corpus`), MHO (the command, default .venv/bin/mho).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MHO="${MHO:-.venv/bin/mho}"
CORPUS="${CORPUS:-data/corpus}"
MODELS=mho/assets/models
eval_args=()
for set in ${EVAL_DATA-flite-slt festival-slt $CORPUS/test-flite-slt.jsonl $CORPUS/test-festival-slt.jsonl}; do
    eval_args+=(--eval-data "$set")
done
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for model in "$MODELS"/*.pt; do names+=("$(basename "$model" .pt)"); done
fi
for name in "${names[@]}"; do
    $MHO models pack "$MODELS/$name.pt" --name "$name" "${eval_args[@]}"
done
