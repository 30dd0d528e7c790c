#!/usr/bin/env bash
# Shopper queries (DESIGN.md section 3) on H&M: "<colour> <product type>" from
# the catalog's colour_group_name and product_type_name, judged by them,
# precision@10 over the whole catalog and over the test split alone, for each
# bundle given (through the engine) beside BM25 and all-MiniLM-L6-v2 over
# title + description and the chance line, all on the same 150 queries
# (`vitrine-index shopper`, seed 7). Writes bench/results/shopper/<label>.md
# and .json for each bundle and the shopper_queries section of bench/RESULTS.md.
#
#   bash bench/shopper_queries.sh LABEL=BUNDLE [LABEL=BUNDLE ...]
#   e.g. bash bench/shopper_queries.sh today=runs/demo/hm/bundle/catalog.vitrine
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 1 ] || { echo "usage: bash bench/shopper_queries.sh LABEL=BUNDLE ..." >&2; exit 2; }
[ -d models/all-MiniLM-L6-v2 ] || { echo "no models/all-MiniLM-L6-v2: run \`cargo xtask setup\`" >&2; exit 2; }
echo "[1/2] building vitrine-index (release)"
cargo build -q --release -p vitrine-index-builder --bin vitrine-index
mkdir -p bench/results/shopper
commit=$(git rev-parse --short HEAD)
{
  echo "# Shopper queries on H&M: vitrine beside BM25, MiniLM and chance (bench/shopper_queries.sh)"
  echo
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, no GPU"
  echo "- commit: $commit; command: \`bash bench/shopper_queries.sh $*\`"
  echo "- queries: a seeded sample (seed 7) of the (colour_group_name, product_type_name) pairs with >= 10 items in the catalog and >= 2 in the test split, \"Other…\"/\"Unknown\" values left out; the indexed texts (title + description) almost never name the colour"
  echo "- vitrine over the whole catalog goes through the engine's shipped path (HNSW + exact re-rank); over the test split it scores the bundle's int8 vectors of the test items exactly; score ties are broken by a seeded hash of the article id"
  echo
} > bench/results/shopper/header.md
step=0
for pair in "$@"; do
  label=${pair%%=*}; bundle=${pair#*=}
  step=$((step + 1))
  echo "[2/2] bundle $step of $#: $label ($bundle)"
  target/release/vitrine-index shopper --catalog ../shared/data/hm --bundle "$bundle" --out "bench/results/shopper/$label.json" \
    > "bench/results/shopper/$label.md"
  { echo "## $label: \`$bundle\`"; echo; cat "bench/results/shopper/$label.md"; echo; } >> bench/results/shopper/header.md
done
python3 bench/results_section.py shopper_queries < bench/results/shopper/header.md
rm bench/results/shopper/header.md
echo "wrote bench/results/shopper/ and the shopper_queries section of bench/RESULTS.md"
