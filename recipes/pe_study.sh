#!/usr/bin/env bash
# The memristor-PE paper's Figure 1 and oracle on the shipped baseline: the positional-encoding
# layers' ADC widened at a fixed 8-bit budget (pe 4/4 ... 0/8), pe 4/8, the whole model at 4/8,
# and the PE layers kept digital; then the PE-less model at 4/4 and 4/8. RUNS chips each, the
# depthwise convolutions digital (their crossbar layout loses ~50 WER points on its own,
# docs/simulator.md). Writes docs/sweeps/MODEL-DATA-depthwise-digital.{md,png,json}.
#   recipes/pe_study.sh          # ~20 min on 2 cores; finished jobs are reused on a rerun
set -euo pipefail
MHO=${MHO:-mho}
DATA=${DATA:-flite-slt}
RUNS=${RUNS:-5}
MODEL=${MODEL:-conformer-sinusoidal-linear-w8}
WITHOUT_PE=${WITHOUT_PE:-conformer-none-w8}
OUT=${OUT:-runs/pe-study}
mkdir -p "$OUT"
printf '[[layers]]\npattern = "*.depthwise"\ndigital = true\n' > "$OUT/depthwise-digital.toml"
$MHO sweep "$MODEL" --data "$DATA" -o "$OUT/$MODEL" --preset oracle --preset figure1 --adc 4/8 \
  --runs "$RUNS" --memristor "$OUT/depthwise-digital.toml"
$MHO sweep "$WITHOUT_PE" --data "$DATA" -o "$OUT/$WITHOUT_PE" --adc 4/4 --adc 4/8 \
  --runs "$RUNS" --memristor "$OUT/depthwise-digital.toml"
for model in "$MODEL" "$WITHOUT_PE"; do
  for ext in md png json; do
    cp "$OUT/$model/sweep.$ext" "docs/sweeps/$model-$DATA-depthwise-digital.$ext"
  done
done
