#!/usr/bin/env bash
# The test command (README: "Test"). Release mode everywhere, so burn is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked
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
