#!/usr/bin/env bash
# The int8 ANN index on random clustered 256-d unit vectors (the stand-in until
# the index builder measures real embeddings): HNSW build time and size,
# recall@10 against exact f32 and exact int8 search, time per query (one
# thread, native), category-filtered search.
# Writes bench/results/ann.md with the machine, the commit and the command.
#
#   bash bench/ann.sh [extra ann_bench arguments, e.g. --items 11800]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build -q --release -p vitrine-core --example ann_bench
report=$(target/release/examples/ann_bench --variants "$@")
out=bench/results/ann.md
{
    echo "# ANN index: int8 HNSW (instant-distance) with exact re-rank"
    echo
    echo "- machine: $(nproc) cores, $(lscpu | grep 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core bench || echo ' (with uncommitted changes)')"
    echo "- command: \`bash bench/ann.sh $*\`"
    echo "- data: random clustered unit vectors (core/src/index/synthetic.rs); queries drawn from the same clusters, not in the index"
    echo "- search: the query quantised to int8 walks the graph (beam ef), the ef nearest are re-scored against the f32 query; one thread"
    echo
    echo "$report"
} > "$out"
echo "wrote $out"
