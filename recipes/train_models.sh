#!/usr/bin/env bash
# Train the shipped Conformer-CTC models: for each positional-encoding variant, a float
# pre-training, then 8-bit and 4-bit quantization-aware fine-tuning from it. Variants run
# as parallel lanes (LANES, default 2; on a CPU one thread each is faster than one job on
# two threads). Every step resumes where it stopped (`--resume`), so rerunning is cheap.
#
# Usage: recipes/train_models.sh [RUNS_DIR]      (default: runs/models)
# Environment: FLOAT_PRESET, QAT_PRESET (default conformer-small, conformer-small-qat),
#   LANES, MHO (the command, default .venv/bin/mho).
# On a GPU machine with the feature archives of `make features` in data/features:
#   FLOAT_PRESET=conformer-small-gpu QAT_PRESET=conformer-small-qat-gpu LANES=5 \
#   MHO="python3 -m mho" recipes/train_models.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-runs/models}"
export MHO="${MHO:-.venv/bin/mho}" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export FLOAT_PRESET="${FLOAT_PRESET:-conformer-small}" QAT_PRESET="${QAT_PRESET:-conformer-small-qat}"

train_variant() {
    set -euo pipefail
    local pe="$1" dir="$2/$1"
    mkdir -p "$dir"
    {
        $MHO train "$FLOAT_PRESET" --set "pe=\"$pe\"" -o "$dir/float" --resume
        for bits in 8 4; do
            $MHO train "$QAT_PRESET" --set "pe=\"$pe\"" --set "weight_bits=$bits" \
                --set "init=\"$dir/float/checkpoint.pt\"" -o "$dir/w$bits" --resume
        done
    } > "$dir/train.log" 2>&1
    echo "$pe: done"
}
export -f train_variant

printf '%s\n' "sinusoidal+linear" "none" "learnable+linear" "sinusoidal" "learnable" |
    xargs -P "${LANES:-2}" -I{} bash -c 'train_variant "$@"' _ {} "$RUNS"
