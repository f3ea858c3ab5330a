#!/usr/bin/env bash
# The LPA study, stage by stage (`make lpa-models` runs them all; on the GPU machine they
# run one per call). Needs data/waveforms/{train,convert,dev}.pt (`make waveforms`).
#   train     the wav2vec2-style teacher (runs/w2v); EPOCHS from the environment
#   convert   MSE diagnostic, then progressive conversion in MSE order and in naive order
#             (two thirds of the layers each), one after the other: two conversions
#             sharing one GPU ran 40x slower per step (kernel-by-kernel time slicing)
#   report    pack and score teacher and every depth (greedy and LM, both shipped test sets),
#             ship five of them, write docs/lpa/conversion.{md,png}
set -euo pipefail
MHO=${MHO:-python3 -m mho}
STEPS=${STEPS:-120}; COADAPT=${COADAPT:-60}; FINETUNE=${FINETUNE:-150}
LAYERS=${LAYERS:-9}  # the teacher's layers
case "${1:?stage: train, convert or report}" in
train)
  $MHO train wav2vec2-small-gpu -o runs/w2v --set epochs="${EPOCHS:-42}" ;;
convert)
  common=(--data data/waveforms/convert.pt --steps "$STEPS" --coadapt-steps "$COADAPT"
          --finetune-steps "$FINETUNE")
  $MHO lpa sweep runs/w2v/checkpoint.pt --data data/waveforms/train.pt -o runs/lpa-sweep \
    --steps "${SWEEP_STEPS:-200}" --json > runs/lpa-sweep.log
  $MHO lpa convert runs/w2v/checkpoint.pt --order mse --ranking runs/lpa-sweep/sweep.json \
    --layers $((LAYERS * 2 / 3)) -o runs/lpa-mse "${common[@]}"
  $MHO lpa convert runs/w2v/checkpoint.pt --order naive --layers $((LAYERS * 2 / 3)) \
    -o runs/lpa-naive "${common[@]}" ;;
report)
  # pack (int8 matrices) and score every depth on both shipped test sets; the teacher and
  # the MSE-order depths 2, 4, 6 and naive depth 6 ship, the rest stay in runs/lpa-packed
  out=${OUT:-runs/lpa-packed}
  pack() { $MHO models pack "$1" --name "$2" --out-dir "$3" \
             --eval-data flite-slt --eval-data festival-slt; }
  pack runs/w2v/checkpoint.pt wav2vec2-small mho/assets/models
  for depth in 2 4 6; do
    pack "runs/lpa-mse/depth-$depth.pt" "wav2vec2-small-lpa$depth-mse" mho/assets/models
    [ "$depth" = 6 ] && dir=mho/assets/models || dir=$out
    pack "runs/lpa-naive/depth-$depth.pt" "wav2vec2-small-lpa$depth-naive" "$dir"
  done
  cards=(wav2vec2-small wav2vec2-small-lpa{2,4,6}-mse wav2vec2-small-lpa6-naive
         "$out"/wav2vec2-small-lpa{2,4}-naive.pt)
  $MHO lpa report "${cards[@]}" -o docs/lpa ;;
esac
