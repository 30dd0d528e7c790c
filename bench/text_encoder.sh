#!/usr/bin/env bash
# Text encoder speed and size, f32 against int8 weights (vitrine's per-channel
# kernel and candle's Q8_0): 50 H&M queries of 9–16 tokens, one at a time,
# median ms per query, natively (one thread and all cores) and in WebAssembly
# under node; cosine of the int8 embeddings to the f32 ones; model bytes.
# Writes bench/results/text_encoder.md with the machine, the commit and the command.
#
#   bash bench/text_encoder.sh [model-dir] [catalog-dir]
#
# model-dir: a text encoder folder with f32 weights (config.json,
# model.safetensors, tokenizer.json), by default all-MiniLM-L6-v2 from
# `cargo xtask setup` (the text tower a checkpoint starts from, same sizes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=${1:-models/all-MiniLM-L6-v2}
catalog=${2:-../shared/data/hm}
[ -f "$model/model.safetensors" ] || { echo "no model at $model (run \`cargo xtask setup\` or pass a folder)" >&2; exit 1; }
# Other work on the machine skews the figures: the results say how busy it was.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
work=target/bench-text-encoder
rm -rf "$work" && mkdir -p "$work"

cargo build -q --release -p vitrine-core --example text_encoder_bench
native=target/release/examples/text_encoder_bench
one_thread=$(RAYON_NUM_THREADS=1 "$native" --model "$model" --catalog "$catalog" --queries-out "$work/queries.json" --int8-out "$work/int8")
all_cores=$("$native" --model "$model" --catalog "$catalog")

# .cargo/config.toml turns on simd128 for wasm32.
cargo build -q --release -p vitrine-wasm --target wasm32-unknown-unknown
wasm-bindgen --target nodejs --out-dir "$work/pkg" target/wasm32-unknown-unknown/release/vitrine_wasm.wasm
wasm=$(node bench/text_encoder_wasm.mjs "$work/pkg" "$model" "$work/int8" "$work/queries.json")

out=bench/results/text_encoder.md
{
    echo "# Text encoder: f32 against int8 weights"
    echo
    echo "- machine: $(nproc) cores, $(lscpu | grep 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core/src/model core/src/text.rs core/examples/text_encoder_bench.rs wasm/src bench/text_encoder.sh bench/text_encoder_wasm.mjs || echo ' (with uncommitted changes to what it measures)')"
    echo "- command: \`bash bench/text_encoder.sh $model $catalog\`"
    echo "- model: \`$model\`; int8 = the text encoder's 36 linear layers per output channel (core/src/model/quant.rs)"
    echo "- per query: tokenize, encode, mean-pool, normalise; median over the queries after 5 warm-up queries"
    echo
    echo "## Native, one thread (\`RAYON_NUM_THREADS=1\`)"
    echo
    echo "$one_thread"
    echo
    echo "## Native, all cores"
    echo
    echo "$all_cores" | sed '/^model.safetensors/d'
    echo
    echo "## WebAssembly (simd128) in node, wasm-bindgen --target nodejs, no wasm-opt"
    echo
    echo "$wasm"
} > "$out"
cat "$out"
