#!/usr/bin/env bash
# The memristor-PE paper's Table 1 on our models: every shipped Conformer (5 PE variants x
# 8/4-bit weights) on simulated chips at ADC (4, 4), RUNS programming runs each, in the
# columns named by COLUMNS (see docs/simulator.md):
#   per-channel        every layer on crossbars, depthwise convs per channel (the default)
#   block-diagonal     every layer on crossbars, depthwise convs block-diagonal
#   depthwise-digital  the depthwise convs kept digital
# then one markdown table ($TABLE, default docs/sweeps/table1-per-channel.md), each sweep's
# outputs beside it (docs/sweeps/table1-MODEL-DATA-COLUMN.{md,png,json,csv}).
#   recipes/table1.sh            # per-channel only: ~45 min on 2 cores
#   COLUMNS="per-channel block-diagonal depthwise-digital" recipes/table1.sh
#   MODELS="conformer-none-w4 conformer-learnable-w8" recipes/table1.sh   # some models only
# Finished jobs are reused on a rerun (resumable).
set -euo pipefail
MHO=${MHO:-mho}
DATA=${DATA:-flite-slt}
RUNS=${RUNS:-5}
OUT=${OUT:-runs/table1}
WORKERS=${WORKERS:-2}
COLUMNS=${COLUMNS:-per-channel}
TABLE=${TABLE:-docs/sweeps/table1-per-channel.md}
ALL_MODELS=$(for bits in 8 4; do for pe in none sinusoidal-linear learnable-linear sinusoidal \
  learnable; do echo "conformer-$pe-w$bits"; done; done)
MODELS=${MODELS:-$ALL_MODELS}
mkdir -p "$OUT"
printf 'depthwise = "per-channel"\n' > "$OUT/per-channel.toml"
printf 'depthwise = "block-diagonal"\n' > "$OUT/block-diagonal.toml"
printf '[[layers]]\npattern = "*.depthwise"\ndigital = true\n' > "$OUT/depthwise-digital.toml"
for model in $MODELS; do
  for column in $COLUMNS; do
    $MHO sweep "$model" --data "$DATA" -o "$OUT/$model/$column" --adc 4/4 --runs "$RUNS" \
      --workers "$WORKERS" --memristor "$OUT/$column.toml"
    for ext in md png json csv; do
      cp "$OUT/$model/$column/sweep.$ext" "$(dirname "$TABLE")/table1-$model-$DATA-$column.$ext"
    done
  done
done
python recipes/table1.py "$OUT" "$DATA" > "$TABLE"
