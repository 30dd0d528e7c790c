#!/usr/bin/env bash
# Pretraining task weights and the ITC bank, chosen on the H&M val split: each
# candidate is the cpu recipe with its [tasks] and bank_negatives replaced,
# pretrained, fine-tuned (the recipe's multi-task fine-tune) and evaluated on
# val with the paper's protocols. The choice is made on val; the test split
# is read only for the chosen recipe (bench/results/hm_ablation_v2 style runs).
#
#   bash bench/recipe_search.sh [CANDIDATE ...]     (default: all candidates)
#
# Needs `cargo xtask setup` and the main job's VQ-VAE and feature cache
# (runs/demo/hm/vqvae, runs/demo/hm/cache). A candidate whose run folders are
# complete is only evaluated again (resume). Writes
# bench/results/recipe_search/<candidate>.{toml,json} and summary.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
catalog=../shared/data/hm
demo=runs/demo/hm
out=runs/recipe_search
results=bench/results/recipe_search
seed=${SEED:-7}

# name: tasks (task=weight,...), the ITC bank, and optionally the image
# encoder's last layers trained on cached maps (tail=LAYERSxLR_MULTIPLIER)
# and a multiple of both stages' steps and decay points (steps=xK).
declare -A candidates=(
  [paper-mix]="itc=0.20,mvc=0.20,itm=0.15,mlm=0.15,mpfc=0.15,pac=0.15 bank=false"
  [itc-only]="itc=1.0 bank=false"
  [itc-only-bank]="itc=1.0 bank=true"
  [itc-heavy-bank]="itc=0.50,mvc=0.10,itm=0.10,mlm=0.10,mpfc=0.10,pac=0.10 bank=true"
  [itc-mlm-pac-bank]="itc=0.60,mlm=0.20,pac=0.20 bank=true"
  # itc-only-bank again, with the batch's own images embedded live in the bank
  # (the random stream of fine-tuning changed with it): the tail rows' baseline.
  [itc-only-bank-live]="itc=1.0 bank=true"
  [itc-only-bank-tail2]="itc=1.0 bank=true tail=2x4"
  [itc-only-bank-tail2-lr20]="itc=1.0 bank=true tail=2x20"
  [itc-only-bank-tail2-steps2]="itc=1.0 bank=true tail=2x4 steps=x2"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(paper-mix itc-only itc-only-bank itc-heavy-bank itc-mlm-pac-bank itc-only-bank-live itc-only-bank-tail2 itc-only-bank-tail2-lr20 itc-only-bank-tail2-steps2)
for name in "${names[@]}"; do
  [ -n "${candidates[$name]:-}" ] || { echo "unknown candidate $name (one of: ${!candidates[*]})" >&2; exit 2; }
done
[ -d "$demo/vqvae" ] && [ -d "$demo/cache" ] || { echo "no $demo/vqvae or $demo/cache: run \`cargo xtask demo --no-serve\` first" >&2; exit 2; }

echo "[1/2] building vitrine-train (release)"
cargo build -q --release -p vitrine-trainer --bin vitrine-train
mkdir -p "$out" "$results"
step=0
for name in "${names[@]}"; do
  step=$((step + 1))
  read -r tasks bank tail steps <<<"${candidates[$name]}"
  tail=${tail:-tail=0x1}
  steps=${steps:-steps=x1}
  recipe="$results/$name.toml"
  python3 - "$name" "$tasks" "${bank#bank=}" "$seed" "${tail#tail=}" "${steps#steps=x}" >"$recipe" <<'EOF'
import re, sys
name, tasks, bank, seed, tail, times = sys.argv[1:7]
layers, multiplier = tail.split("x")
times = int(times)
def scaled(text):
    """Steps and decay points times `times` (warm-up kept)."""
    text = re.sub(r"^steps = (\d+)$", lambda m: f"steps = {int(m[1]) * times}", text, flags=re.M)
    return re.sub(r"^decay_steps = \[([0-9, ]*)\]$",
                  lambda m: "decay_steps = [" + ", ".join(str(int(x) * times) for x in m[1].split(",")) + "]", text, flags=re.M)
head, tail = open("trainer/recipes/cpu.toml").read().split("\n[tasks]\n", 1)
head = re.sub(r"^bank_negatives = .*\n", "", head, flags=re.M)
head = re.sub(r"^name = .*$", f'name = "cpu-search-{name}"', head, flags=re.M)
head = re.sub(r"^seed = .*$", f"seed = {seed}", head, flags=re.M)
head = re.sub(r"^image_tail_layers = .*\n", "", head, flags=re.M)
head = re.sub(r'^lr_multipliers = \[\["image_tail\.", [0-9.]+\], ', "lr_multipliers = [", head, flags=re.M)
if layers != "0":
    head = re.sub(r'^image_encoder = "frozen"$', f'image_encoder = "frozen"\nimage_tail_layers = {layers}', head, flags=re.M)
    head = re.sub(r"^lr_multipliers = \[", f'lr_multipliers = [["image_tail.", {float(multiplier)}], ', head, flags=re.M)
weights = "".join(f"{t} = {w}\n" for t, w in (pair.split("=") for pair in tasks.split(",")))
tail = re.sub(r"^(?:[a-z]+ = [0-9.]+\n)+", weights, tail)
if times != 1:
    # The VQ-VAE's steps stay: only pretraining's (head) and fine-tuning's.
    vqvae, finetune = tail.split("\n[finetune]\n", 1)
    head, tail = scaled(head), vqvae + "\n[finetune]\n" + scaled(finetune)
print(f"{head}\nbank_negatives = {bank}\n\n[tasks]\n{tail}", end="")
EOF
  run="$out/$name-seed$seed"
  echo "[2/2] candidate $step of ${#names[@]}: $name ($tasks, $bank)"
  vqvae=()
  [[ $tasks == *mpfc* ]] && vqvae=(--vqvae "$demo/vqvae")
  target/release/vitrine-train pretrain --catalog "$catalog" --config "$recipe" --cache "$demo/cache" --run "$run/pretrain" "${vqvae[@]}" --resume
  target/release/vitrine-train finetune --catalog "$catalog" --config "$recipe" --cache "$demo/cache" --run "$run/finetune" --from "$run/pretrain" --resume
  target/release/vitrine-train eval --catalog "$catalog" --config "$recipe" --cache "$demo/cache" --checkpoint "$run/finetune" --split val \
    --out "$results/$name.json" >/dev/null
done
python3 - "$results" "$seed" "$(git rev-parse --short HEAD)" <<'EOF' >"$results/summary.md"
import json, pathlib, sys
results, seed, commit = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"# Pretraining recipe candidates on the H&M val split (seed {seed}, commit {commit}, `bash bench/recipe_search.sh`)\n")
print("| candidate | ITR R@1/5/10 | TIR R@1/5/10 | TGIR R@10 | SCR acc/F1 | OCIR R@10 macro | meta-sum |")
print("|---|---|---|---|---|---|---|")
for path in sorted(results.glob("*.json")):
    r = json.loads(path.read_text())
    f = lambda xs: "/".join(f"{x:.1f}" for x in xs)
    ocir = r["ocir_macro"][0]
    print(f"| {path.stem} | {f(r['xmr_random100']['itr'])} | {f(r['xmr_random100']['tir'])} | {r['tgir_mean'][0]:.1f} | "
          f"{r['scr']['accuracy']:.1f}/{r['scr']['macro_f1']:.1f} | {ocir:.1f} | **{r['meta_sum']:.1f}** |")
EOF
cat "$results/summary.md"
