#!/usr/bin/env bash
# The memristor-PE paper's Table 1 on our models: every shipped Conformer (5 PE variants x
# 8/4-bit weights) on simulated chips at ADC (4, 4), RUNS programming runs each, once with
# every layer on crossbars and once with the depthwise convolutions kept digital (see
# docs/simulator.md); then one markdown table (docs/sweeps/table1.md).
#   recipes/table1.sh            # ~25-40 min on 2 cores; finished jobs are reused on a rerun
set -euo pipefail
MHO=${MHO:-mho}
DATA=${DATA:-flite-slt}
RUNS=${RUNS:-5}
OUT=${OUT:-runs/table1}
mkdir -p "$OUT"
printf '[[layers]]\npattern = "*.depthwise"\ndigital = true\n' > "$OUT/depthwise-digital.toml"
for bits in 8 4; do
  for pe in none sinusoidal-linear learnable-linear sinusoidal learnable; do
    model=conformer-$pe-w$bits
    $MHO sweep "$model" --data "$DATA" -o "$OUT/$model/crossbar" --adc 4/4 --runs "$RUNS"
    $MHO sweep "$model" --data "$DATA" -o "$OUT/$model/depthwise-digital" --adc 4/4 \
      --runs "$RUNS" --memristor "$OUT/depthwise-digital.toml"
  done
done
python recipes/table1.py "$OUT" "$DATA" > docs/sweeps/table1.md
