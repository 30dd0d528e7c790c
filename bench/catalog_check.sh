#!/usr/bin/env bash
# Catalog check throughput on the H&M sample: rows parsed and validated, and
# every photo decoded, per second. Writes bench/results/catalog_check.md with
# the machine, the commit and the command.
#
#   bash bench/catalog_check.sh [catalog-dir]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
catalog=${1:-../shared/data/hm}
[ -d "$catalog" ] || { echo "no catalog at $catalog (pass one as the first argument)" >&2; exit 1; }
cargo build -q --release -p vitrine
bin=target/release/vitrine
items=$("$bin" catalog check "$catalog" --no-images --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"])')

median_seconds() {
    local runs=()
    for _ in 1 2 3 4 5; do
        local start end
        start=$(date +%s.%N)
        "$bin" catalog check "$catalog" "$@" >/dev/null 2>&1
        end=$(date +%s.%N)
        runs+=("$(python3 -c "print($end - $start)")")
    done
    printf '%s\n' "${runs[@]}" | sort -g | sed -n 3p
}

texts=$(median_seconds --no-images)
full=$(median_seconds)
out=bench/results/catalog_check.md
{
    echo "# vitrine catalog check: throughput"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
    echo "- command: \`bash bench/catalog_check.sh $catalog\` (release build, median of 5 runs)"
    echo
    echo "| check | items | median s | items/s |"
    echo "|---|---|---|---|"
    printf '| rows only (`--no-images`) | %s | %.3f | %.0f |\n' "$items" "$texts" "$(python3 -c "print($items / $texts)")"
    printf '| rows + decode every photo | %s | %.3f | %.0f |\n' "$items" "$full" "$(python3 -c "print($items / $full)")"
} > "$out"
cat "$out"
