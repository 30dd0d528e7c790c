#!/usr/bin/env bash
# The int8 HNSW index (core::index::AnnIndex) in WebAssembly: recall@10 against
# the exact f32 scan and µs per search over a sweep of ef, at 11.8k items (the
# H&M bundle's index part as shipped) and 100k items (views of the H&M photos,
# index-builder/examples/ann_views.rs's way; once with int8 codes alone, once
# with the 4-bit refinement codes of `vitrine-index build --refine`), against
# the index's own exact scan and the exact f32 scan, plus the native build time
# of each index. The browser loads a
# prebuilt index from the bundle, so the index is built natively
# (AnnIndex::build, as `vitrine-index build`) and serialised in the bundle's
# encoding, then decoded and searched in wasm (wasm-bindgen --target nodejs,
# node, one thread, simd128 from .cargo/config.toml) through the shipped search
# path, AnnIndex::search with SearchParams (bench/ann_wasm/, a bench-only crate).
#
#   bash bench/ann_wasm.sh
#
# Inputs (environment, defaults in brackets): CATALOG [../shared/data/hm],
# CHECKPOINT [/work/runs/ablation/runs/all-seed7/finetune/step-000150, the
# fine-tuned model the H&M embeddings came from], CACHE [/work/runs/ablation/cache,
# its image feature cache], BUNDLE [/work/runs/bundle-hm-image/bundle],
# EMBEDDINGS [/work/runs/bundle-hm/embeddings, the teacher embeddings that
# bundle was distilled from], QUERIES [1000], LARGE [100000], EF
# [10,16,24,32,48,64,100,128,200,300,400,800], ROUNDS [3]. ANN_WASM_NICE=1 also runs
# the timed steps under `nice` (builds and the embedding step always are).
#
# Writes bench/results/ann_wasm.md and its section of bench/RESULTS.md (between
# `<!-- ann_wasm:begin -->` and `<!-- ann_wasm:end -->`, replaced on a rerun),
# with the machine, load average before and after, the commit and the command.
# Intermediate files: target/bench-ann-wasm/ (about 220 MB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
overrides=""
for v in CATALOG CHECKPOINT CACHE BUNDLE EMBEDDINGS QUERIES LARGE EF ROUNDS ANN_WASM_NICE; do
    [ -n "${!v:-}" ] && overrides+="$v=${!v} "
done
CATALOG=${CATALOG:-../shared/data/hm}
CHECKPOINT=${CHECKPOINT:-/work/runs/ablation/runs/all-seed7/finetune/step-000150}
CACHE=${CACHE:-/work/runs/ablation/cache}
BUNDLE=${BUNDLE:-/work/runs/bundle-hm-image/bundle}
EMBEDDINGS=${EMBEDDINGS:-/work/runs/bundle-hm/embeddings}
QUERIES=${QUERIES:-1000}
LARGE=${LARGE:-100000}
EF=${EF:-10,16,24,32,48,64,100,128,200,300,400,800}
ROUNDS=${ROUNDS:-3}
timed=()
[ "${ANN_WASM_NICE:-0}" = 1 ] && timed=(nice)
export CARGO_INCREMENTAL=0

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
work=target/bench-ann-wasm
rm -rf "$work" && mkdir -p "$work/data"

echo "[ann_wasm] building (native data example, wasm bench crate)" >&2
nice cargo build -q --release -p vitrine-index-builder --example ann_wasm_data
nice cargo build -q --release -p vitrine-bench-ann-wasm --target wasm32-unknown-unknown
wasm-bindgen --target nodejs --out-dir "$work/pkg" target/wasm32-unknown-unknown/release/vitrine_bench_ann_wasm.wasm
data=target/release/examples/ann_wasm_data

echo "[ann_wasm] vectors: bundle products, views, queries" >&2
nice "$data" vectors --catalog "$CATALOG" --checkpoint "$CHECKPOINT" --cache "$CACHE" --bundle "$BUNDLE" \
    --embeddings "$EMBEDDINGS" --queries "$QUERIES" --large "$LARGE" --out "$work/data" > "$work/vectors.log"
load_timed=$(cut -d' ' -f1-3 /proc/loadavg)
echo "[ann_wasm] native index builds and sweep" >&2
"${timed[@]}" "$data" index --out "$work/data" --ef "$EF"
echo "[ann_wasm] wasm search" >&2
wasm=$("${timed[@]}" node bench/ann_wasm.mjs "$work/pkg" "$work/data" "$EF" "$ROUNDS")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

summary=$(printf '%s\n' "$wasm" | sed '/^@@details@@$/,$d')
details=$(printf '%s\n' "$wasm" | sed '1,/^@@details@@$/d')
vectors=$(cat "$work/data/vectors.json")
field() { python3 -c "import json,sys; d=json.load(open('$work/data/vectors.json')); print(eval(sys.argv[1]))" "$1"; }
measured="core/src/index bench/ann_wasm bench/ann_wasm.mjs bench/ann_wasm.sh index-builder/examples/ann_wasm_data.rs"
dirty=""
git diff --quiet HEAD -- $measured 2>/dev/null || dirty=" (uncommitted changes to what it measures)"
[ -n "$(git status --porcelain -- $measured)" ] && [ -z "$dirty" ] && dirty=" (files of this benchmark not yet committed)"
load1=${load_after%% *}
busy=""
if python3 -c "import sys; sys.exit(0 if max(float('$load1'), float('${load_before%% *}')) > $(nproc) * 0.75 else 1)"; then
    busy=" — **the machine was busy with other jobs during this run** (load above its $(nproc) cores' worth): absolute times are inflated and noisy; recall figures are unaffected"
fi

header() {
    echo "- command: \`${overrides}bash bench/ann_wasm.sh\`"
    echo "- commit: $(git rev-parse --short HEAD)$dirty; run $started"
    echo "- machine: $(nproc) cores, $(lscpu | grep 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB; node $(node --version), wasm32-unknown-unknown with simd128, wasm-bindgen $(wasm-bindgen --version | cut -d' ' -f2) --target nodejs, no wasm-opt"
    echo "- load average (1, 5, 15 min) before: $load_before; before the timed steps: $load_timed; after: $load_after$busy"
    echo "- priority: builds and the view embedding under \`nice\`; the timed steps (native builds and sweep, wasm run) at normal priority$( [ ${#timed[@]} -gt 0 ] && echo ' — here under nice too (ANN_WASM_NICE=1)')"
    echo "- data: bundle \`$BUNDLE\` ($(field 'd["small_items"]') products, $(field 'd["dim"]')-d, image weight $(field 'd["image_weight"]')); its f32 product vectors recomputed from the teacher embeddings \`$EMBEDDINGS\` and the bundle's projection, as \`vitrine-index build\` computes them; $(field 'format(d["large_items"], ",")') of the $(field 'format(d["views"], ",")') views ($(field 'd["views_per_article"]') windows of each article's 7×7 visual-token grid through \`$CHECKPOINT\` — the whole grid, its four 6×6 corners, its nine 5×5 windows — each averaged into an image embedding, paired with the article's text by the bundle's image weight and projected by the bundle's heads, as index-builder/examples/ann_views.rs makes its views, without its mirrored views, which duplicate the unmirrored ones exactly; a seeded sample); each article's whole-grid view against its bundle vector (a check that the checkpoint is the one the embeddings came from): cosine mean $(field 'round(d["view0_vs_bundle_vector_cosine"]["mean"],6)'), min $(field 'round(d["view0_vs_bundle_vector_cosine"]["min"],6)')"
    echo "- the 100k set is about $(field 'round(d["large_items"]/d["small_items"],1)') views per article, near-duplicates of each other: the nearest other view of the same article has cosine median $(field 'round(d["large_nearest_sibling_cosine"]["median"],4)'); share of items with one at ≥ 0.99: $(field 'round(d["large_nearest_sibling_cosine"]["share_at_least_0_99"],3)'), ≥ 0.999: $(field 'round(d["large_nearest_sibling_cosine"]["share_at_least_0_999"],3)'), ≥ 0.99999: $(field 'round(d["large_nearest_sibling_cosine"]["share_at_least_0_99999"],3)') — denser than a real 100k catalog, so harder at the top 10"
    echo "- queries: $(field 'd["text_queries"]') article texts (the teacher's text embeddings of a seeded sample of articles, through the bundle's projection: what a text query becomes before the index; the query article is in both indexes) and $(field 'd["view_queries"]') held-out views (a seeded sample of the $(field 'format(d["held_out_views"], ",")') views not in the 100k set; item-like queries in neither index); ground truth: the exact f32 scan over the f32 vectors of the indexed items"
    echo "- timing: one search at a time from JavaScript (performance.now around each call into wasm; the query is already in wasm memory, the result ids read after the clock stops), the query quantised, the graph walked, the ef nearest re-scored against the f32 query (rerank = ef): \`AnnIndex::search\` with \`SearchParams { ef, rerank: ef, .. }\`; ef 100 is the engine's \`SearchParams::default()\`"
}

out=bench/results/ann_wasm.md
{
    echo "# ANN in WebAssembly: recall@10 against latency over ef, int8 HNSW, 11.8k and 100k H&M items"
    echo
    header
    echo
    echo "$summary"
    echo
    echo "$details"
} > "$out"

{
    echo "# ANN in WebAssembly: recall@10 against latency over ef, 11.8k and 100k items (bench/ann_wasm.sh)"
    echo
    header
    echo
    echo "$summary"
    echo
    echo "Every ef, both query sets, native times beside wasm: \`bench/results/ann_wasm.md\`."
} | python3 bench/results_section.py ann_wasm
cat "$out"
echo "wrote $out and its section of bench/RESULTS.md" >&2
