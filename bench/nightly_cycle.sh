#!/usr/bin/env bash
# Wall time of a nightly cycle on a real catalog with the cpu recipe.
#
# From the source catalog (default: the H&M export) two nights are made:
# night A lacks 30 train items, night B has them back ("added"), lacks 20
# other train items ("removed") and has new descriptions for 15 more
# ("changed"); the val and test splits are the same both nights. Night A
# publishes the given fine-tuned model (`--candidate`: gate and bundle, no
# training); night B is the cycle measured: `vitrine nightly` warm-starts the
# fine-tune from the published model with the recipe's step budget, evaluates
# candidate and published model on the val split, builds the bundle and
# publishes it. Stage times and each tool's peak memory come from the audit
# records, the bundle's stages from its build report.
# Writes bench/results/nightly_cycle.md and its section of bench/RESULTS.md.
#
#   [NIGHT_B_FLAGS=--force] bash bench/nightly_cycle.sh [fine-tuned checkpoint] [catalog]
#
# The checkpoint defaults to the one `cargo xtask demo` trains on H&M. A rerun
# keeps night A (target/bench-nightly; delete it to start over) and runs night
# B again; the report lists every night B run. NIGHT_B_FLAGS adds flags to
# night B, e.g. `--force` to measure the publishing stages when the gate refuses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
checkpoint=${1:-runs/demo/hm/finetune}
source_catalog=${2:-../shared/data/hm}
work=target/bench-nightly
[ -e "$checkpoint" ] || { echo "no fine-tuned checkpoint at $checkpoint: run \`cargo xtask demo\` or pass one" >&2; exit 2; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "[1/4] building vitrine, vitrine-train, vitrine-index (release)"
cargo build -q --release -p vitrine -p vitrine-trainer -p vitrine-index-builder
vitrine=target/release/vitrine

if [ -f "$work/publish/current.json" ]; then
    echo "[2/4] the two nights' catalogs: kept from an earlier run ($work)"
    echo "[3/4] night A: published by an earlier run (delete $work to start over)"
else
echo "[2/4] the two nights' catalogs from $source_catalog"
rm -rf "$work"
mkdir -p "$work"
python3 - "$source_catalog" "$work" <<'EOF'
import csv, io, os, sys
source, work = sys.argv[1:3]
splits = dict(csv.reader(open(os.path.join(source, "splits.csv"))))
with open(os.path.join(source, "articles.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
train = sorted(r["article_id"] for r in rows if splits.get(r["article_id"]) == "train")
# Every 100th train item, in three disjoint sets.
picked = train[::100]
added, removed, changed = set(picked[:30]), set(picked[30:50]), set(picked[50:65])
for night, leave_out in (("A", added), ("B", removed)):
    folder = os.path.join(work, f"catalog-{night}")
    os.makedirs(folder)
    os.symlink(os.path.abspath(os.path.join(source, "images")), os.path.join(folder, "images"))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=rows[0].keys(), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        if row["article_id"] in leave_out:
            continue
        if night == "B" and row["article_id"] in changed:
            row = dict(row, detail_desc=row["detail_desc"] + " Now in recycled material.")
        writer.writerow(row)
    open(os.path.join(folder, "articles.csv"), "w").write(out.getvalue())
    with open(os.path.join(folder, "splits.csv"), "w") as f:
        f.write("article_id,split\n")
        f.writelines(f"{a},{s}\n" for a, s in splits.items() if a != "article_id" and a not in leave_out)
    with open(os.path.join(source, "baskets.csv")) as f, open(os.path.join(folder, "baskets.csv"), "w") as g:
        g.write(next(f))
        for line in f:
            basket, articles = line.rstrip("\n").split(",", 1)
            kept = [a for a in articles.split() if a not in leave_out]
            if len(kept) >= 2:
                g.write(f"{basket},{' '.join(kept)}\n")
print(f"night A leaves out {len(added)} items; night B adds them back, removes {len(removed)}, changes {len(changed)}")
EOF

echo "[3/4] night A: publishing $checkpoint (gate and bundle, no training)"
"$vitrine" nightly --catalog "$work/catalog-A" --publish "$work/publish" --state "$work/state" --candidate "$checkpoint" \
    > "$work/night-A.log" 2>&1 || { tail -30 "$work/night-A.log"; exit 1; }
tail -1 "$work/night-A.log"
fi

echo "[4/4] night B: the measured cycle (warm-started fine-tune, gate, bundle, publish) ${NIGHT_B_FLAGS:-}"
load_b=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086 # NIGHT_B_FLAGS is a list of flags
"$vitrine" nightly --catalog "$work/catalog-B" --publish "$work/publish" --state "$work/state" ${NIGHT_B_FLAGS:-} \
    >> "$work/night-B.log" 2>&1 || echo "night B did not publish (see $work/night-B.log)"
tail -1 "$work/night-B.log"
echo "${NIGHT_B_FLAGS:-(none)}" >> "$work/night-B.flags"

out=bench/results/nightly_cycle.md
python3 bench/nightly_cycle_report.py "$work" "$load_before" "$load_b" "bash bench/nightly_cycle.sh $checkpoint $source_catalog" > "$out"
cat "$out"
python3 bench/results_section.py nightly_cycle < "$out"
