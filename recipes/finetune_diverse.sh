#!/usr/bin/env bash
# Fine-tune the shipped Conformers on every English voice (docs/diverse-training.md,
# "Fine-tuning on the CPU"), stage by stage; every stage resumes where it stopped:
#   data    two corpora of every English voice (HOURS each, seeds 1 and 2, the shipped
#           sentence split), the second one voice-converted (WORLD: new pitch, formants and
#           a vocoder's sound), joined into one training manifest
#   train   QAT fine-tuning of BASE (a shipped model) on it with speed and VTLP
#           augmentation, EPOCHS epochs; Ctrl-C or SIGTERM saves, rerun to continue
#   score   pack the result as NAME (card scored greedy and with the LM on the shipped
#           held-out sets) and score it with the general LM (`make lm-general`) too
#   ship    pack it into mho/assets/models, the card scored on the shipped sets and on the
#           400-utterance test sets of TESTS (default data/corpus, `make corpus`)
# Environment: BASE (default conformer-sinusoidal-linear-w8), NAME (default BASE-diverse),
#   BITS (the weight bits to train at; default BASE's), LR (peak learning rate, default the
#   preset's), NORM (the model's utterance_norm: level or spectrum; set it again to train on
#   from a model that has one), DISTILL (a teacher model whose frame posteriors are extra
#   targets, docs/diverse-training.md "Distillation"),
#   HOURS (3), EPOCHS (3), DATA (data/diverse), RUNS (runs/diverse),
#   MHO (.venv/bin/mho). A 4-bit model from the 8-bit fine-tuned one, for example:
#   BASE=conformer-sinusoidal-linear-w8-diverse BITS=4 EPOCHS=6 LR=2e-4 \
#     NAME=conformer-sinusoidal-linear-w4-diverse recipes/finetune_diverse.sh train
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MHO=${MHO:-.venv/bin/mho}
BASE=${BASE:-conformer-sinusoidal-linear-w8}; NAME=${NAME:-$BASE-diverse}
HOURS=${HOURS:-3}; EPOCHS=${EPOCHS:-3}
DATA=${DATA:-data/diverse}; RUNS=${RUNS:-runs/diverse}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# from the model name (conformer-<pe>-w<bits>[-suffix])
bits=${BASE##*-w}; bits=${BITS:-${bits%%-*}}; pe=${BASE#conformer-}; pe=${pe%-w*}; pe=${pe//-/+}
lr=(); [ -n "${LR:-}" ] && lr=(--set "peak_lr=$LR")
norm=(); [ -n "${NORM:-}" ] && norm=(--set "model.utterance_norm=\"$NORM\"")
distill=(); [ -n "${DISTILL:-}" ] && distill=(--set "distill.teacher=\"$DISTILL\"")
case "${1:?stage: data, train, score or ship}" in
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
    --set "data.dev=\"$DATA/all-1/dev.jsonl\"" "${lr[@]}" "${norm[@]}" \
    "${distill[@]}" -o "$RUNS/$NAME" --resume ;;
score)
  $MHO models pack "$RUNS/$NAME/checkpoint.pt" --name "$NAME" --out-dir "$RUNS/packed" \
    --eval-data flite-slt --eval-data festival-slt
  $MHO eval "$BASE" "$RUNS/packed/$NAME.pt" --data flite-slt --data festival-slt \
    --lm data/lm-general ;;
ship)
  tests=${TESTS:-data/corpus}
  $MHO models pack "$RUNS/$NAME/checkpoint.pt" --name "$NAME" --eval-data flite-slt \
    --eval-data festival-slt --eval-data "$tests/test-flite-slt.jsonl" \
    --eval-data "$tests/test-festival-slt.jsonl" ;;
esac
