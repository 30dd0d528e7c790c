#!/usr/bin/env bash
# The index builder at catalog sizes: `vitrine-index build` (embed with the
# fine-tuned model, distil, int8 + HNSW, write) on the H&M catalog (11.8k
# items) and on a ~100k-item catalog made from it: every article copied under
# new article ids and product codes (new groups), its title marked with the
# copy's number, photos linked to the original files. The copies' work per
# item is the real one (each is tokenised, embedded and indexed); search
# quality is not measured at the large size, only time and memory.
# Per-stage seconds come from each build's build-report.json, peak RSS from
# `/usr/bin/time -v`. Image features come from the photo feature store in
# CACHE (filled on first use; the copies share the originals' photos).
# Writes bench/results/index_build.md and its section of bench/RESULTS.md.
#
#   bash bench/index_build.sh [fine-tuned checkpoint] [copies, default 8] [feature cache]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
checkpoint=${1:-runs/demo/hm/finetune}
copies=${2:-8}
work=target/bench-index-build
cache=${3:-$work/cache}
source_catalog=../shared/data/hm
[ -e "$checkpoint" ] || { echo "no fine-tuned checkpoint at $checkpoint: run \`cargo xtask demo\` or pass one" >&2; exit 2; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "[1/4] building vitrine-index (release)"
cargo build -q --release -p vitrine-index-builder --bin vitrine-index
index=target/release/vitrine-index

echo "[2/4] the large catalog: H&M and $copies copies of it"
large=$work/catalog-x$((copies + 1))
rm -rf "$large" "$work"/out-*
mkdir -p "$large"
python3 - "$source_catalog" "$large" "$copies" <<'EOF'
import csv, os, sys
source, out, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(os.path.join(source, "articles.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
splits = dict(csv.reader(open(os.path.join(source, "splits.csv"))))
images = os.path.abspath(os.path.join(source, "images"))
with open(os.path.join(out, "articles.csv"), "w", newline="") as f, open(os.path.join(out, "splits.csv"), "w") as s:
    writer = csv.DictWriter(f, fieldnames=rows[0].keys(), lineterminator="\n")
    writer.writeheader()
    s.write("article_id,split\n")
    for copy in range(copies + 1):
        for row in rows:
            old = row["article_id"]
            # Article ids start with 0: the copy number takes that digit.
            new = old if copy == 0 else f"{copy}{old[1:]}"
            if copy:
                row = dict(row, article_id=new, product_code=f"{copy}{row['product_code']}", prod_name=f"{row['prod_name']} ({copy})")
            writer.writerow(row)
            s.write(f"{new},{splits[old]}\n")
            photo = os.path.join(images, old[:3], f"{old}.jpg")
            folder = os.path.join(out, "images", new[:3])
            os.makedirs(folder, exist_ok=True)
            if os.path.exists(photo):
                os.symlink(photo, os.path.join(folder, f"{new}.jpg"))
with open(os.path.join(source, "baskets.csv")) as f, open(os.path.join(out, "baskets.csv"), "w") as g:
    g.write(f.read())
print(f"{len(rows) * (copies + 1)} articles")
EOF

rows=()
step=2
for catalog in "$source_catalog" "$large"; do
    step=$((step + 1))
    name=$(basename "$catalog")
    echo "[$step/4] vitrine-index build on $name"
    out=$work/out-$name
    /usr/bin/time -v -o "$work/$name.time" "$index" build --catalog "$catalog" --checkpoint "$checkpoint" --config cpu \
        --cache "$cache" --out "$out" > "$work/$name.log" 2>&1 || { tail -20 "$work/$name.log"; exit 1; }
    rows+=("$(python3 - "$out/build-report.json" "$work/$name.time" <<'EOF'
import json, re, sys
report, timing = json.load(open(sys.argv[1])), open(sys.argv[2]).read()
stages = dict(report["stages"])
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1)) / 2**20
wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", timing).group(1).strip()
total = sum(stages.values())
cells = [f"{report['items']:,}", f"{stages['embed']:.1f}", f"{report['items'] / stages['embed']:.1f}", f"{stages['distil']:.1f}",
         f"{stages['index']:.1f}", f"{stages['text encoder'] + stages['write'] + stages['load']:.1f}", f"{total:.1f}", wall,
         f"{peak:.2f}", f"{report['total_bytes']:,}"]
print("| " + " | ".join(cells) + " |")
EOF
)")
done

out=bench/results/index_build.md
{
    echo "# Index builder at 11.8k and ~100k items (CPU)"
    echo
    echo "- machine: $(nproc) cores, $(lscpu | grep 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB, no GPU"
    echo "- load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- commit: $(git rev-parse --short HEAD)"
    echo "- command: \`bash bench/index_build.sh $checkpoint $copies $cache\`"
    echo "- \`vitrine-index build --config cpu\` with its defaults (up to 20,000 distillation examples, 300 distillation steps, 256 dims; the nightly passes 4,000 examples); the large catalog is H&M plus $copies renamed copies (same photos and texts, titles marked), so per-item work is real and quality is not measured there"
    echo
    echo "| items | embed s | embed items/s | distil s | int8 + HNSW s | load, text encoder, write s | total s (stages) | wall (incl. start) | peak RSS GiB | bundle bytes |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} > "$out"
cat "$out"
python3 bench/results_section.py index_build < "$out"
