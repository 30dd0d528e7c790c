#!/usr/bin/env bash
# H&M written out as a shop's plain CSV (no colour groups, no baskets; H&M's
# fixed split kept in a column), through the main job, measured beside the
# main job's full H&M model on the same test split and on both rulers: H&M's
# real colour-variant triplets, and the CSV catalog's attribute-difference
# triplets. Needs the full H&M main job first (runs/demo/hm).
#
#   bash bench/hm_as_csv/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export=runs/hm-as-csv-export
out=bench/results/hm_as_csv
python3 bench/hm_as_csv/export.py ../shared/data/hm "$export"
# The photos are H&M's: start from the full run's feature cache rather than encode them again.
if [ ! -d runs/demo/hm-as-csv/cache ]; then
    mkdir -p runs/demo/hm-as-csv
    cp -a runs/demo/hm/cache runs/demo/hm-as-csv/cache
fi
cargo xtask demo --catalog "$export/hm-as-csv.csv" --mapping "$export/mapping.json" --no-serve
mkdir -p "$out"
for model in hm hm-as-csv; do
    for ruler in hm imported/hm-as-csv; do
        catalog=../shared/data/hm
        [ "$ruler" = hm ] || catalog=runs/demo/imported/hm-as-csv
        target/release/vitrine-train eval --catalog "$catalog" --config cpu --cache runs/demo/hm/cache \
            --checkpoint "runs/demo/$model/finetune" --split test --out "$out/$model-model-on-$(basename "$ruler")-test.json"
    done
done
python3 bench/hm_as_csv/table.py "$out" > "$out/README.md"
