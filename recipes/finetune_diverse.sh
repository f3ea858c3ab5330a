#!/usr/bin/env bash
# Fine-tune the shipped Conformers on every English voice (docs/diverse-training.md,
# "Fine-tuning on the CPU"), stage by stage; every stage resumes where it stopped:
#   data    two corpora of every English voice (HOURS each, seeds 1 and 2, the shipped
#           sentence split), the second one voice-converted (WORLD: new pitch, formants and
#           a vocoder's sound), joined into one training manifest
#   train   QAT fine-tuning of BASE (a shipped model) on it with speed and VTLP
#           augmentation, EPOCHS epochs; Ctrl-C saves, rerun to continue
#   score   pack the result as NAME (card scored greedy and with the LM on the shipped
#           held-out sets) and score it with the general LM (`make lm-general`) too
# Environment: BASE (default conformer-sinusoidal-linear-w8), NAME (default BASE-diverse),
#   HOURS (3), EPOCHS (3), DATA (data/diverse), RUNS (runs/diverse), MHO (.venv/bin/mho).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MHO=${MHO:-.venv/bin/mho}
BASE=${BASE:-conformer-sinusoidal-linear-w8}; NAME=${NAME:-$BASE-diverse}
HOURS=${HOURS:-3}; EPOCHS=${EPOCHS:-3}
DATA=${DATA:-data/diverse}; RUNS=${RUNS:-runs/diverse}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
bits=${BASE##*-w}; pe=${BASE#conformer-}; pe=${pe%-w*}; pe=${pe//-/+}  # from the model name
case "${1:?stage: data, train or score}" in
data)
  # corpus builds skip what exists, so rerunning resumes
  $MHO data build "$DATA/all-1" --voices all --hours "$HOURS" --seed 1 --split-seed 0 \
    --set train --set dev
  $MHO data build "$DATA/all-2" --voices all --hours "$HOURS" --seed 2 --split-seed 0 --set train
  $MHO data convert-voices "$DATA/all-2/train.jsonl" -o "$DATA/all-2-converted" --seed 2
  $MHO data join "$DATA/all-1/train.jsonl" "$DATA/all-2-converted/train.jsonl" \
    -o "$DATA/train.jsonl" ;;
train)
  $MHO train conformer-small-finetune --set "init=\"$BASE\"" --set "pe=\"$pe\"" \
    --set "weight_bits=$bits" \
    --set "epochs=$EPOCHS" --set "data.train=\"$DATA/train.jsonl\"" \
    --set "data.dev=\"$DATA/all-1/dev.jsonl\"" -o "$RUNS/$NAME" --resume ;;
score)
  $MHO models pack "$RUNS/$NAME/checkpoint.pt" --name "$NAME" --out-dir "$RUNS/packed" \
    --eval-data flite-slt --eval-data festival-slt
  $MHO eval "$BASE" "$RUNS/packed/$NAME.pt" --data flite-slt --data festival-slt \
    --lm data/lm-general ;;
esac
