#!/usr/bin/env bash
# Build KenLM's `lmplz` (ARPA estimation) and `build_binary` (ARPA -> KenLM binary) from the
# PyPI kenlm sdist, which carries the full C++ source including lm/builder. The Python wheel
# does not ship these tools, and decoding never needs them: they only make the shipped LM.
#
# Needs cmake, a C++ compiler and the Debian packages
#   libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
#   zlib1g-dev libbz2-dev liblzma-dev
#
# Usage: recipes/build_kenlm.sh [PREFIX]   (default PREFIX: tools/kenlm in the repo root)
# Result: PREFIX/bin/lmplz and PREFIX/bin/build_binary. Does nothing when both exist.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${1:-$ROOT/tools/kenlm}"
JOBS="${JOBS:-2}"
VERSION=0.3.0
URL="https://files.pythonhosted.org/packages/02/6e/f4e159cef39ea4ef2244b4aa32857d447d60a5d0ee269e1b1f8d3723c03e/kenlm-${VERSION}.tar.gz"
SHA256=c4628bb9fb63c8a6f9240035b8b037385cfc404cb72e933cf48878291edac1e8

if [[ -x "$PREFIX/bin/lmplz" && -x "$PREFIX/bin/build_binary" ]]; then
    echo "kenlm: already built in $PREFIX/bin"
    exit 0
fi

mkdir -p "$PREFIX/src" "$PREFIX/bin"
TARBALL="$PREFIX/src/kenlm-${VERSION}.tar.gz"
if [[ ! -f "$TARBALL" ]]; then
    curl -fsSL --retry 3 -o "$TARBALL.partial" "$URL"
    mv "$TARBALL.partial" "$TARBALL"
fi
# A pinned hash: the sdist is the only thing fetched, and it must be the one we tested.
echo "$SHA256  $TARBALL" | sha256sum --check --quiet -

SRC="$PREFIX/src/kenlm-${VERSION}"
[[ -d "$SRC" ]] || tar -xzf "$TARBALL" -C "$PREFIX/src"

# Only the two tools: the full tree (tests, interpolate, python) takes several times longer.
LOG="$SRC/build.log"
# Compiler chatter (deprecation warnings) goes to the log; on failure its tail is shown.
trap 'echo "kenlm: build failed, see $LOG" >&2; tail -n 30 "$LOG" >&2' ERR
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 \
    -DCOMPILE_TESTS=OFF -DENABLE_PYTHON=OFF > "$LOG" 2>&1
cmake --build "$SRC/build" --target lmplz build_binary -j "$JOBS" >> "$LOG" 2>&1
trap - ERR
install -m 755 "$SRC/build/bin/lmplz" "$SRC/build/bin/build_binary" "$PREFIX/bin/"
echo "kenlm: built $PREFIX/bin/lmplz and $PREFIX/bin/build_binary"
