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
# publishes it. Stage times come from the audit record and the bundle's build
# report, peak memory from `/usr/bin/time -v` (its largest process).
# Writes bench/results/nightly_cycle.md and its section of bench/RESULTS.md.
#
#   bash bench/nightly_cycle.sh [fine-tuned checkpoint] [catalog]
#
# The checkpoint defaults to the one `cargo xtask demo` trains on H&M.
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

echo "[4/4] night B: the measured cycle (warm-started fine-tune, gate, bundle, publish)"
load_b=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/time -v -o "$work/night-B.time" "$vitrine" nightly --catalog "$work/catalog-B" --publish "$work/publish" --state "$work/state" \
    > "$work/night-B.log" 2>&1 || { tail -30 "$work/night-B.log"; echo "night B did not publish (see $work/night-B.log)"; }
tail -1 "$work/night-B.log"

out=bench/results/nightly_cycle.md
python3 - "$work" "$out" "$load_before" "$load_b" "$checkpoint" "$source_catalog" <<'EOF'
import glob, json, os, re, subprocess, sys
work, out, load_before, load_b, checkpoint, catalog = sys.argv[1:7]
audit = json.load(open(sorted(glob.glob(f"{work}/state/audit/*.json"))[-1]))
timing = open(f"{work}/night-B.time").read()
peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1))
wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", timing).group(1).strip()
log = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", open(f"{work}/night-B.log").read())
passes = [tuple(int(v) for v in m) for m in re.findall(r"photo feature store photos=(\d+) encoded=(\d+)", log)]
report_path = f"{work}/state/runs/{audit['run']}/bundle/build-report.json"
build = json.load(open(report_path)) if os.path.exists(report_path) else None
sh = lambda cmd: subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
cpu = sh("lscpu | grep 'Model name' | cut -d: -f2").strip()
lines = [
    "# Nightly cycle on H&M, cpu recipe",
    "",
    f"- machine: {os.cpu_count()} cores, {cpu}, {sh('free -g | awk \"/Mem:/ {print \\$2}\"')} GiB, no GPU",
    f"- load average (1, 5, 15 min) before the bench: {load_before}; before night B: {load_b}; after: {open('/proc/loadavg').read().split()[:3]}",
    f"- commit: {sh('git rev-parse --short HEAD')}",
    f"- command: `bash bench/nightly_cycle.sh {checkpoint} {catalog}`",
    f"- night B: `vitrine nightly --catalog catalog-B --publish publish --state state` (recipe cpu, fine-tune budget: the recipe's)",
    "",
    f"Catalog changes seen by night B: {audit['catalog']['items']} items, {audit['catalog']['added']} added, "
    f"{audit['catalog']['changed']} changed, {audit['catalog']['removed']} removed. Decision: **{audit['decision']}**"
    + (f" (version {audit['published']})." if audit.get("published") else f": {audit.get('error')}."),
    "",
    f"**Night B wall time: {audit['seconds']:.0f} s** (`/usr/bin/time`: {wall}); peak RSS of its largest process {peak_kib / 1024 / 1024:.2f} GiB.",
    "",
    "| stage | seconds |",
    "|---|---|",
]
lines += [f"| {s['stage']} | {s['seconds']:.1f} |" for s in audit["stages"]]
lines += ["", "Photo feature store passes of night B (photos asked for, photos encoded): " + ", ".join(f"{p}/{e}" for p, e in passes) + "."]
if build:
    lines += ["", f"Bundle build (`vitrine-index build`, {build['items']} items, {build['dims']} dims):", "", "| build stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in build["stages"]]
    embed = dict(build["stages"]).get("embed")
    if embed:
        lines += ["", f"Embedding: {build['items'] / embed:.1f} items/s (teacher model, text and image of every item)."]
if audit["comparisons"]:
    lines += ["", "Gate (val split, points):", "", "| task | published | candidate | change |", "|---|---|---|---|"]
    show = lambda v: "—" if v is None else f"{v:.2f}"
    lines += [f"| {c['task']} | {show(c['published'])} | {show(c['candidate'])} | {show(c['change'])} |" for c in audit["comparisons"]]
open(out, "w").write("\n".join(lines) + "\n")
EOF
cat "$out"

python3 bench/results_section.py nightly_cycle < "$out"
