#!/usr/bin/env bash
# Issue 18's GPU session in one command: bash BUNDLE/run.sh [full|tiny]
# BUNDLE is the folder recipes/gpu/bundle.sh made (carried to the device as .device18);
# results go to $OUT (default ./out18). WORK (default /tmp/mho18) keeps the corpora,
# archives and runs: rerunning with the same WORK resumes every phase.
# Needs only python3 with torch, numpy and scipy (the device image has them): everything
# else (synthesizers, their libraries and data, wheels, mho itself) is in BUNDLE.
# PYTHON picks the interpreter, WHEELS another wheel folder (the CPU dry run on Python 3.11).
set -uo pipefail
D="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE="${1:-full}"
OUT="${OUT:-$PWD/out18}"
WORK="${WORK:-/tmp/mho18}"
mkdir -p "$OUT" "$WORK"
PYTHON="${PYTHON:-python3}"
echo "run.sh: mode $MODE, bundle $D, work $WORK, out $OUT, $(date -u +%FT%TZ)"
B="$WORK/bundle"  # the unpacked payload: bin, lib, libexec, share, mho
if [ ! -f "$B/.unpacked" ]; then
    rm -rf "$B" && mkdir -p "$B"
    "$PYTHON" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
        "$D/payload.tar.xz" "$B" || { echo "unpacking failed"; exit 1; }
    touch "$B/.unpacked"
fi
# the shipped test sets (for scoring only) come from the checkout this runs in
[ -e "$B/mho/assets/testsets" ] || [ ! -d "$PWD/mho/assets/testsets" ] \
    || ln -s "$PWD/mho/assets/testsets" "$B/mho/assets/testsets"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "${WHEELS:-$D/wheels}"/*.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="$B:$WORK/site" PATH="$B/bin:$PATH" PYTHONUNBUFFERED=1 \
    MHO_FESTIVAL_VOICES="$B/share/festival/voices" TQDM_DISABLE=1 \
    MHO_WORDNET_DIR="$B/share/text/wordnet" MHO_FORTUNES_DIR="$B/share/text/fortunes"
# the bundled synthesizers must be the ones found, never a system install
for tool in espeak-ng flite festival; do
    [ "$(command -v $tool)" = "$B/bin/$tool" ] || { echo "$tool is not the bundled one"; exit 1; }
done
"$PYTHON" "$D/lanes.py" --mode "$MODE" --work "$WORK" --out "$OUT" 2>&1 | tee "$WORK/run.log"
status=${PIPESTATUS[0]}
cp "$WORK/run.log" "$OUT/run.log" 2>/dev/null
exit "$status"
