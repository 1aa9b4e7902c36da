#!/usr/bin/env bash
# Build the llama.cpp peer from PyPI only (no other network):
#   1. `pip download --no-binary llama-cpp-python` gets the llama-cpp-python sdist, which vendors
#      llama.cpp (PyPI is the only reachable registry).
#   2. cmake builds llama.cpp's shared libraries plus llama-server, llama-batched-bench and
#      llama-tokenize into $LLAMA_BUILD (nice, -j$JOBS). GGML_NATIVE is OFF and the SIMD flags are
#      chosen from /proc/cpuinfo: on CPUs that list AMX but cannot run it, a native build dies with
#      "Illegal instruction", so AVX-512 is enabled explicitly where listed and AMX never is.
#      (On a Xeon whose kernel grants AMX, where a probe program's tile product runs, a build with
#      GGML_AMX_TILE/INT8/BF16 on died too: llama-server stopped with SIGILL at ggml-cpu's first
#      `tilezero`, llama-cpp-python 0.3.36, 2026-12-03.)
#   3. llama-cpp-python[server] is installed into $VENV from the same sdist with LLAMA_BUILD=OFF
#      (no second C++ compile) and the libraries from step 2 are copied into its llama_cpp/lib.
# Idempotent: finished steps are skipped.
#
# Env: VENV (/work/venv-ref), LLAMA_SRC (/work/llama-src), LLAMA_BUILD (/work/llama-build),
#      LLAMA_CPP_PYTHON_VERSION (0.3.36), JOBS (2)
set -euo pipefail
VENV="${VENV:-/work/venv-ref}"
LLAMA_SRC="${LLAMA_SRC:-/work/llama-src}"
LLAMA_BUILD="${LLAMA_BUILD:-/work/llama-build}"
VER="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
SDIST="$LLAMA_SRC/llama_cpp_python-$VER.tar.gz"
SRC="$LLAMA_SRC/llama_cpp_python-$VER"

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
# cmake and ninja from PyPI wheels
"$PY" -m pip install --quiet cmake ninja
export PATH="$VENV/bin:$PATH"

mkdir -p "$LLAMA_SRC"
if [[ ! -f "$SDIST" ]]; then
    "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VER" -d "$LLAMA_SRC"
fi
[[ -d "$SRC" ]] || tar -xzf "$SDIST" -C "$LLAMA_SRC"

# SIMD flags from the CPU's own list (x86 only; elsewhere ggml's defaults apply).
SIMD=()
if grep -q '^flags' /proc/cpuinfo 2>/dev/null; then
    FLAGS=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    has() { [[ "$FLAGS" == *" $1 "* ]]; }
    onoff() { if has "$1"; then echo ON; else echo OFF; fi; }
    SIMD=(-DGGML_AVX=$(onoff avx) -DGGML_AVX2=$(onoff avx2) -DGGML_FMA=$(onoff fma) -DGGML_F16C=$(onoff f16c)
          -DGGML_BMI2=$(onoff bmi2) -DGGML_AVX512=$(onoff avx512f) -DGGML_AVX512_VBMI=$(onoff avx512vbmi)
          -DGGML_AVX512_VNNI=$(onoff avx512_vnni) -DGGML_AVX512_BF16=$(onoff avx512_bf16)
          -DGGML_AVX_VNNI=$(onoff avx_vnni) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
fi
mkdir -p "$LLAMA_BUILD"
if [[ ! -f "$LLAMA_BUILD/build.ninja" ]]; then
    cmake -S "$SRC/vendor/llama.cpp" -B "$LLAMA_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF "${SIMD[@]}" >&2
fi
nice -n 10 ninja -C "$LLAMA_BUILD" -j "$JOBS" llama-server llama-batched-bench llama-tokenize >&2

if ! "$PY" -c "import importlib.metadata as m; assert m.version('llama_cpp_python') == '$VER'" 2>/dev/null; then
    CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$PY" -m pip install --quiet "$SDIST[server]"
fi
LIBDIR="$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib")')"
mkdir -p "$LIBDIR"
cp -a "$LLAMA_BUILD"/bin/lib*.so* "$LIBDIR"/
"$PY" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'ok')" >&2
echo "$LLAMA_BUILD/bin"
