#!/usr/bin/env bash
# Runs core's index unit tests in WebAssembly with simd128 (wasm32-wasip1
# under Node.js's WASI), where the hand-written simd128 dot products replace
# the portable ones and are tested equal to them; the HNSW tests run there too.
# Needs `rustup target add wasm32-wasip1` and Node.js.
#
#   bash bench/ann/wasm_tests.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rustup target list --installed | grep -qx wasm32-wasip1 || { echo "needs the wasm32-wasip1 target: rustup target add wasm32-wasip1" >&2; exit 1; }
RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $PWD/bench/ann/wasi_runner.mjs" \
    cargo test -p vitrine-core --lib --target wasm32-wasip1 index::
