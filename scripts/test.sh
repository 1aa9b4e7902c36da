#!/usr/bin/env bash
# The test command (README: "Test"). Release mode everywhere, so burn is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked
# The in-process test server stays out of `dno`: dno-oracle's `fake-server` feature comes from
# dev-dependencies only, never from a normal dependency of the binary.
if cargo tree --locked -p dno-cli -e normal,build,features --prefix none | grep -q 'dno-oracle feature "fake-server"'; then
  echo 'error: dno-oracle/fake-server is enabled in the dno binary build' >&2
  exit 1
fi
cargo test --release --workspace --locked
# The GPU build must keep compiling even on machines without CUDA.
# DOCS_RS=1 stops burn-cuda's LLVM bundler from downloading at build time (no network here); `check` needs no LLVM.
DOCS_RS=1 CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}" cargo check --release -p dno-cli --features cuda --locked
# The device suite on burn's wgpu backend (CI: Mesa's software Vulkan driver, lavapipe; see README
# "On AMD, Intel or Apple GPUs, and in CI"). Its own target dir: the wgpu feature rebuilds burn.
if [ "${DNO_WGPU_SUITE:-0}" = 1 ]; then
  DNO_TEST_DEVICE=wgpu CARGO_TARGET_DIR="${DNO_WGPU_TARGET_DIR:-${CARGO_TARGET_DIR:-target}-wgpu}" \
    cargo test --release --locked -p dno-cli --features wgpu --test device
fi
