#!/usr/bin/env bash
# Trainer throughput per pretext task on this machine's CPUs, and peak memory:
# for each of ITC, MVC, ITM, MLM, MPFC, PAC, `vitrine-train pretrain` with the
# cpu recipe restricted to that one task runs STEPS steps on the catalog's train
# split; the median samples/s of its steps (the first three left out: warm-up)
# and the process's peak RSS (`/usr/bin/time -v`) are reported. The image
# features come from the cache folder (computed there on the first run).
# Writes bench/results/trainer_throughput.md and its section of bench/RESULTS.md.
#
#   bash bench/trainer_throughput.sh [catalog] [steps] [feature-cache-folder]
#
# The VQ-VAE that MPFC needs is trained once into target/bench-trainer/vqvae.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
catalog=${1:-../shared/data/hm}
steps=${2:-20}
work=target/bench-trainer
cache=${3:-$work/cache}
mkdir -p "$work"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "[1/3] building vitrine-train (release)"
cargo build -q --release -p vitrine-trainer --bin vitrine-train
train=target/release/vitrine-train

echo "[2/3] image tokenizer for MPFC"
[ -f "$work/vqvae/vqvae.safetensors" ] || "$train" vqvae --catalog "$catalog" --config cpu --cache "$cache" --out "$work/vqvae"

rows=()
i=0
for task in itc mvc itm mlm mpfc pac; do
    i=$((i + 1))
    echo "[3/3] task $i of 6: $task, $steps steps"
    recipe=$work/$task.toml
    # The cpu recipe with one pretext task and no checkpoint before the end.
    python3 - "$task" "$steps" > "$recipe" <<'EOF'
import re, sys
task, steps = sys.argv[1], int(sys.argv[2])
text = open("trainer/recipes/cpu.toml").read()
text = re.sub(r"(?m)^steps = \d+$", f"steps = {steps}", text, count=1)
text = re.sub(r"(?m)^checkpoint_every = \d+$", f"checkpoint_every = {steps}", text)
text = re.sub(r"(?m)^decay_steps = \[[^\]]*\]$", "decay_steps = []", text, count=1)
text = re.sub(r"(?ms)^\[tasks\]\n.*?\n\n", f"[tasks]\n{task} = 1.0\n\n", text)
print(text)
EOF
    run=$work/run-$task
    rm -rf "$run"
    /usr/bin/time -v -o "$work/$task.time" "$train" pretrain --catalog "$catalog" --config "$recipe" --vqvae "$work/vqvae" --cache "$cache" --run "$run" > "$work/$task.log" 2>&1
    row=$(python3 - "$run/metrics.jsonl" "$work/$task.time" "$task" <<'EOF'
import json, statistics, sys
metrics, timing, task = sys.argv[1:4]
rates = [json.loads(line)["samples_per_s"] for line in open(metrics)][3:]
peak_kib = next(int(l.split()[-1]) for l in open(timing) if "Maximum resident set size" in l)
wall = next(l.split(": ", 1)[1].strip() for l in open(timing) if "Elapsed (wall clock)" in l)
print(f"| {task.upper()} | {len(rates) + 3} | {statistics.median(rates):.1f} | {min(rates):.1f}–{max(rates):.1f} | {peak_kib / 1024 / 1024:.2f} | {wall} |")
EOF
)
    rows+=("$row")
done

out=bench/results/trainer_throughput.md
{
    echo "# Trainer throughput per pretext task (CPU)"
    echo
    echo "- machine: $(nproc) cores, $(lscpu | grep 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB, no GPU"
    echo "- load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- commit: $(git rev-parse --short HEAD)"
    echo "- command: \`bash bench/trainer_throughput.sh $catalog $steps $cache\`"
    echo "- recipe: trainer/recipes/cpu.toml (frozen, cached EfficientNet-Lite0 features; batch 32) with one task each"
    echo
    echo "| task | steps | median samples/s (steps 4–) | range | peak RSS GiB (whole process) | wall (incl. loading) |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} > "$out"
cat "$out"

python3 bench/results_section.py trainer_throughput < "$out"
