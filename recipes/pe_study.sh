#!/usr/bin/env bash
# The memristor-PE paper's Figure 1 and oracle on the shipped baseline: the positional-encoding
# layers' ADC widened at a fixed 8-bit budget (pe 4/4 ... 0/8), pe 4/8, the whole model at 4/8,
# and the PE layers kept digital; then the PE-less model at 4/4 and 4/8. RUNS chips each,
# every layer on crossbars in LAYOUT's depthwise layout (default per-channel; LAYOUT=digital
# keeps the depthwise convolutions digital instead). Writes
# docs/sweeps/MODEL-DATA-LAYOUT.{md,png,json,csv}.
#   recipes/pe_study.sh          # ~40 min on 2 cores; finished jobs are reused on a rerun
set -euo pipefail
MHO=${MHO:-mho}
DATA=${DATA:-flite-slt}
RUNS=${RUNS:-5}
MODEL=${MODEL:-conformer-sinusoidal-linear-w8}
WITHOUT_PE=${WITHOUT_PE:-conformer-none-w8}
OUT=${OUT:-runs/pe-study}
WORKERS=${WORKERS:-2}
LAYOUT=${LAYOUT:-per-channel}
mkdir -p "$OUT"
if [ "$LAYOUT" = digital ]; then
  name=depthwise-digital
  printf '[[layers]]\npattern = "*.depthwise"\ndigital = true\n' > "$OUT/$name.toml"
else
  name=$LAYOUT
  printf 'depthwise = "%s"\n' "$LAYOUT" > "$OUT/$name.toml"
fi
$MHO sweep "$MODEL" --data "$DATA" -o "$OUT/$MODEL-$name" --preset oracle --preset figure1 \
  --adc 4/8 --runs "$RUNS" --workers "$WORKERS" --memristor "$OUT/$name.toml"
$MHO sweep "$WITHOUT_PE" --data "$DATA" -o "$OUT/$WITHOUT_PE-$name" --adc 4/4 --adc 4/8 \
  --runs "$RUNS" --workers "$WORKERS" --memristor "$OUT/$name.toml"
for model in "$MODEL" "$WITHOUT_PE"; do
  for ext in md png json csv; do
    if [ -f "$OUT/$model-$name/sweep.$ext" ]; then
      cp "$OUT/$model-$name/sweep.$ext" "docs/sweeps/$model-$DATA-$name.$ext"
    fi
  done
done
