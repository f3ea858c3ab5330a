#!/usr/bin/env bash
# Train the shipped Conformer-CTC models: for each positional-encoding variant, a float
# pre-training, then 8-bit and 4-bit quantization-aware fine-tuning from it. Variants run
# as parallel lanes of one thread each (LANES, default 2: faster than one job on two threads).
# Every step resumes where it stopped (`--resume`), so rerunning after a crash is cheap.
#
# Usage: recipes/train_models.sh [RUNS_DIR]      (default: runs/models)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-runs/models}"
export MHO=.venv/bin/mho OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

train_variant() {
    set -euo pipefail
    local pe="$1" dir="$2/$1"
    mkdir -p "$dir"
    {
        $MHO train conformer-small --set "pe=\"$pe\"" -o "$dir/float" --resume
        for bits in 8 4; do
            $MHO train conformer-small-qat --set "pe=\"$pe\"" --set "weight_bits=$bits" \
                --set "init=\"$dir/float/checkpoint.pt\"" -o "$dir/w$bits" --resume
        done
    } > "$dir/train.log" 2>&1
    echo "$pe: done"
}
export -f train_variant

printf '%s\n' "sinusoidal+linear" "none" "learnable+linear" "sinusoidal" "learnable" |
    xargs -P "${LANES:-2}" -I{} bash -c 'train_variant "$@"' _ {} "$RUNS"
