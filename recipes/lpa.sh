#!/usr/bin/env bash
# The LPA study, stage by stage (`make lpa-models` runs them all; on the GPU machine they
# run one per call). Needs data/waveforms/{train,convert,dev}.pt (`make waveforms`).
#   train     the wav2vec2-style teacher (runs/w2v); EPOCHS from the environment
#   convert   MSE diagnostic, then progressive conversion in MSE order and in naive order
#             (two thirds of the layers each), one after the other: two conversions
#             sharing one GPU ran 40x slower per step (kernel-by-kernel time slicing)
#   report    score teacher and every depth (greedy and LM, both test sets) -> runs/lpa.json
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
  models=(runs/w2v/checkpoint.pt runs/lpa-mse/depth-*.pt runs/lpa-naive/depth-*.pt)
  mkdir -p runs/lpa-scores
  for model in "${models[@]}"; do for decoder in greedy lm; do
    echo "$model $decoder"
  done; done | xargs -P "${JOBS:-8}" -n 2 sh -c 'OMP_NUM_THREADS=2 '"$MHO"' eval "$0" \
    --data flite-slt --data festival-slt --decoder "$1" --json \
    > "runs/lpa-scores/$(echo "$0" | tr / _)-$1.json"'
  cat runs/lpa-scores/*.json > runs/lpa.json ;;
esac
