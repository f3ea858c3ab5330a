#!/usr/bin/env bash
# Rebuild the shipped word LM (mho/assets/lm) from the TRAIN sentences of the text corpus.
# Builds KenLM's lmplz/build_binary first when missing (recipes/build_kenlm.sh).
#
# Usage: recipes/build_lm.sh [OUT_DIR] [extra args for `python -m mho.data.lm`]
#   e.g. recipes/build_lm.sh mho/assets/lm --order 4 --seed 0
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/mho/assets/lm}"
shift || true
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

"$ROOT/recipes/build_kenlm.sh"
cd "$ROOT"
MHO_KENLM_BIN="$ROOT/tools/kenlm/bin" "$PYTHON" -m mho.data.lm --out "$OUT" "$@"
