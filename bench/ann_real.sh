#!/usr/bin/env bash
# ANN recall@10 against exact search and HNSW build time on real embeddings:
# the H&M bundle's index (11.8k articles) and ten feature-grid views of every
# article (about 118k vectors), all through the bundle's projection and int8
# quantisation (index-builder/examples/ann_views.rs says how views are made).
# Needs a fine-tuned checkpoint, its feature cache and a `vitrine-index build`
# output folder. Writes bench/results/ann_real.md with machine, commit and command.
#
#   bash bench/ann_real.sh --catalog ../shared/data/hm --checkpoint CKPT --cache CACHE --build BUILD_OUT
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build -q --release -p vitrine-index-builder --example ann_views
load=$(cut -d' ' -f1-3 /proc/loadavg)
report=$(target/release/examples/ann_views "$@")
out=bench/results/ann_real.md
{
    echo "# ANN index on real embeddings (H&M)"
    echo
    echo "- machine: $(nproc) cores, $(lscpu | grep 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB; load average at the start: $load"
    echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core index-builder bench || echo ' (with uncommitted changes)')"
    echo "- command: \`bash bench/ann_real.sh $*\`"
    echo
    echo "$report"
} > "$out"
echo "wrote $out"
