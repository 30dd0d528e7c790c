#!/usr/bin/env bash
# vitrine against transformers.js in headless Chromium, on the H&M catalog:
# per-query latency (embed + search, 50 queries of 9–16 tokens, one at a time,
# one thread), load time, and shipped bytes (raw and gzip). Writes its sections
# of bench/RESULTS.md (between browser_compare markers) and
# target/browser-compare/results.json, with the machine, load, commit and command.
#
#   bash bench/browser_compare.sh [bundle-dir] [model-dir] [catalog-dir]
#
# bundle-dir: a vitrine bundle folder (manifest.json + parts), by default the H&M
#   bundle /work/runs/bundle-hm-image/bundle; www/pkg must be built
#   (`cargo xtask test` or `cargo xtask demo`).
# model-dir: all-MiniLM-L6-v2 as the project has it (`cargo xtask setup`).
# catalog-dir: the H&M export (articles.csv, splits.csv).
#
# Installs what it needs, skipping what is there: npm packages (pinned,
# bench/browser_compare/package-lock.json) into bench/browser_compare/node_modules,
# a Python venv target/bench-onnx-venv (bench/browser_compare/requirements.txt:
# onnx, onnxruntime, tokenizers, safetensors, numpy; no torch). Then
# bench/browser_compare/prepare.py (ONNX export fp32 + q8, checks, queries,
# catalog vectors; cached in target/browser-compare) and run.mjs (Chromium).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=${1:-/work/runs/bundle-hm-image/bundle}
model=${2:-models/all-MiniLM-L6-v2}
catalog=${3:-../shared/data/hm}
here=bench/browser_compare
venv=target/bench-onnx-venv
work=target/browser-compare
# Other work on the machine skews the figures: the results say how busy it was.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
step() { printf '[browser_compare %s] %s\n' "$1" "$2"; }

for needed in "$bundle/manifest.json" "$model/model.safetensors" "$model/tokenizer.json" "$model/config.json" "$catalog/articles.csv" www/pkg/vitrine_wasm_bg.wasm www/pkg/vitrine_wasm.js; do
    [ -f "$needed" ] || { echo "browser_compare: $needed is missing (www/pkg: \`cargo xtask test\`; models: \`cargo xtask setup\`)" >&2; exit 1; }
done
command -v node >/dev/null || { echo "browser_compare: node (20 or newer) is needed" >&2; exit 1; }
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "browser_compare: no Chromium at ${CHROMIUM:-/usr/bin/chromium} (set CHROMIUM)" >&2; exit 1; }

step 1/4 "npm packages (@huggingface/transformers, playwright-core; $here/package-lock.json) …"
lock_sum=$(sha256sum "$here/package-lock.json" "$here/package.json" | sha256sum | cut -c1-16)
if [ -f "$here/node_modules/.browser-compare-stamp" ] && [ "$(cat "$here/node_modules/.browser-compare-stamp")" = "$lock_sum" ]; then
    echo "  cached: $here/node_modules"
else
    (cd "$here" && nice npm ci --ignore-scripts --no-audit --no-fund)
    echo "$lock_sum" > "$here/node_modules/.browser-compare-stamp"
fi

step 2/4 "python venv $venv ($here/requirements.txt) …"
req_sum=$(sha256sum "$here/requirements.txt" | cut -c1-16)
if [ -f "$venv/.browser-compare-stamp" ] && [ "$(cat "$venv/.browser-compare-stamp")" = "$req_sum" ]; then
    echo "  cached: $venv"
else
    python=$(command -v python3)
    [ -x .venv/bin/python3 ] && python=$(readlink -f .venv/bin/python3)  # the project's interpreter
    "$python" -m venv "$venv"
    nice "$venv/bin/pip" install --no-cache-dir --progress-bar off -r "$here/requirements.txt"
    echo "$req_sum" > "$venv/.browser-compare-stamp"
fi

step 3/4 "ONNX export, checks, queries, catalog vectors ($here/prepare.py → $work) …"
nice "$venv/bin/python" "$here/prepare.py" --model "$model" --catalog "$catalog" --out "$work"

step 4/4 "headless Chromium: vitrine vs transformers.js ($here/run.mjs) …"
nice node "$here/run.mjs" --bundle "$bundle" --model "$model" --work "$work" --results bench/RESULTS.md \
    --load-before "$load_before" --command "bash bench/browser_compare.sh${*:+ $*}"
