#!/usr/bin/env bash
# LPA inside the Conformer (docs/lpa.md, "LPA inside the Conformer"), stage by stage:
#   data      feature archives from the corpus (`make corpus`): COUNT training utterances
#             to fit on and convert with (default 1200, about 1 h)
#   sweep     the MSE diagnostic: an LPA fitted to each block's MHSA alone, ranked
#   convert   progressive conversion in MSE order (MSE_DEPTH blocks) and in naive order
#             (NAIVE_DEPTH blocks, 0 for none); both default to DEPTH (default: half of the
#             baseline's 6)
#   eval      the baseline and every depth of both orders, LM decoder, both shipped test
#             sets; then `mho lpa report` of the packed models (WER vs replaced blocks)
#   tune      optional: each MSE-order depth of SHIP trained on for TUNE_EPOCHS more epochs
#             the way the fine-tuned baselines were (`mho train conformer-small-finetune`:
#             QAT, speed and VTLP augmentation, peak LR TUNE_LR) on CORPUS's manifests
#             (DEV: the dev manifest, default CORPUS/dev.jsonl)
#   ship      the MSE-order depths SHIP (default "3 6") packed into mho/assets/models as
#             BASE-lpa<depth> (the tuned model where `tune` ran), cards scored on both
#             shipped test sets
# BASE (default conformer-sinusoidal-linear-w8) is the shipped attention Conformer;
# STEPS / COADAPT / FINETUNE are the steps per block of each conversion stage; TESTS (a
# corpus folder, e.g. data/corpus) adds its 400-utterance test sets to every card.
set -euo pipefail
MHO=${MHO:-python3 -m mho}
BASE=${BASE:-conformer-sinusoidal-linear-w8}
CORPUS=${CORPUS:-data/corpus}; RUNS=${RUNS:-runs/lpa-conformer}
STEPS=${STEPS:-20}; COADAPT=${COADAPT:-20}; FINETUNE=${FINETUNE:-30}
SWEEP_STEPS=${SWEEP_STEPS:-$STEPS}; DEPTH=${DEPTH:-3}
MSE_DEPTH=${MSE_DEPTH:-$DEPTH}; NAIVE_DEPTH=${NAIVE_DEPTH:-$DEPTH}
SHIP=${SHIP:-3 6}; DEV=${DEV:-$CORPUS/dev.jsonl}
tests=(); [ -n "${TESTS:-}" ] && tests=(--eval-data "$TESTS/test-flite-slt.jsonl"
                                         --eval-data "$TESTS/test-festival-slt.jsonl")
pack() { $MHO models pack "$1" --name "$2" --out-dir "$3" \
           --eval-data flite-slt --eval-data festival-slt "${tests[@]}"; }
case "${1:?stage: data, sweep, convert, eval, tune or ship}" in
data)
  $MHO data features "$CORPUS/train.jsonl" --count "${COUNT:-1200}" -o "$RUNS/train.pt" ;;
sweep)
  $MHO lpa sweep "$BASE" --data "$RUNS/train.pt" -o "$RUNS/sweep" --steps "$SWEEP_STEPS" \
    --json > "$RUNS/sweep.json.log" ;;
convert)
  common=(--data "$RUNS/train.pt" --steps "$STEPS" --coadapt-steps "$COADAPT"
          --finetune-steps "$FINETUNE")
  # --resume: a stopped conversion (Ctrl-C, lost machine) continues where it was
  resume=(); [ -f "$RUNS/mse/state.pt" ] && resume=(--resume)
  $MHO lpa convert "$BASE" --order mse --ranking "$RUNS/sweep/sweep.json" -o "$RUNS/mse" \
    --layers "$MSE_DEPTH" "${common[@]}" "${resume[@]}"
  [ "$NAIVE_DEPTH" = 0 ] && exit 0  # the MSE order alone
  resume=(); [ -f "$RUNS/naive/state.pt" ] && resume=(--resume)
  $MHO lpa convert "$BASE" --order naive -o "$RUNS/naive" --layers "$NAIVE_DEPTH" \
    "${common[@]}" "${resume[@]}" ;;
eval)
  # pack (int8 weights, the card scored greedy and with the LM on both shipped test sets)
  packed=("$BASE")
  for order in mse naive; do
    [ "$order" = mse ] && depth_max=$MSE_DEPTH || depth_max=$NAIVE_DEPTH
    for depth in $(seq 1 "$depth_max"); do
      name="conformer-lpa$depth-$order"
      [ -f "$RUNS/packed/$name.pt" ] || pack "$RUNS/$order/depth-$depth.pt" "$name" "$RUNS/packed"
      packed+=("$RUNS/packed/$name.pt")
    done
  done
  $MHO lpa report "${packed[@]}" -o "$RUNS/report" ;;
tune)
  bits=${BASE##*-w}; bits=${bits%%-*}; pe=${BASE#conformer-}; pe=${pe%-w*}; pe=${pe//-/+}
  for depth in $SHIP; do
    layers=$(python3 -c "import json, sys; order = json.load(open(sys.argv[1]))['mse_order']
print(sorted(order[:int(sys.argv[2])]))" "$RUNS/sweep/sweep.json" "$depth")
    $MHO train conformer-small-finetune --set "init=\"$RUNS/mse/depth-$depth.pt\"" \
      --set "model.lpa_layers=$layers" --set "pe=\"$pe\"" --set "weight_bits=$bits" \
      --set "epochs=${TUNE_EPOCHS:-2}" --set "peak_lr=${TUNE_LR:-1e-4}" \
      --set "data.train=\"$CORPUS/train.jsonl\"" --set "data.dev=\"$DEV\"" \
      -o "$RUNS/tuned-$depth" --resume
  done ;;
ship)
  for depth in $SHIP; do
    model="$RUNS/mse/depth-$depth.pt"
    [ -f "$RUNS/tuned-$depth/checkpoint.pt" ] && model="$RUNS/tuned-$depth/checkpoint.pt"
    pack "$model" "$BASE-lpa$depth" mho/assets/models
  done ;;
esac
