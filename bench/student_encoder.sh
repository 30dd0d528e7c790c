#!/usr/bin/env bash
# The browser's text encoder on H&M: the teacher's int8 text tower against
# distilled students (fewer layers, pruned vocabulary; index-builder/src/student.rs).
# Every variant is one `vitrine-index build` with the same distillation settings
# (only the text encoder differs), then `vitrine-index eval --split test`
# through the browser engine. Reports each bundle's bytes per part (raw and
# gzip -9), the student's val figures from build-report.json and the test
# figures; writes bench/results/student_encoder.md and its RESULTS.md section.
#
#   bash bench/student_encoder.sh [checkpoint] [embeddings] [feature cache]
#
# checkpoint: a fine-tuned H&M model (the main job's runs/demo/hm/finetune);
# embeddings: that model's `vitrine-index` embeddings of the catalog (the main
# job's runs/demo/hm/bundle/embeddings); VARIANTS (env, default "0/256 3/256
# 2/256 2/128 2/256/4"): student layers / compact dimensions [/ bits of the
# text encoder's stored matrices, 8 unless given] of each bundle, 0 layers
# being the teacher's text tower. A variant whose folder holds a finished build
# with the same command is not built again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
checkpoint=${1:-runs/demo/hm/finetune}
embeddings=${2:-runs/demo/hm/bundle/embeddings}
cache=${3:-runs/demo/hm/cache}
catalog=../shared/data/hm
work=target/bench-student
variants=${VARIANTS:-0/256 3/256 2/256 2/128 2/256/4}
for needed in "$checkpoint" "$embeddings" "$catalog/articles.csv"; do
    [ -e "$needed" ] || { echo "student_encoder: $needed is missing (run \`cargo xtask demo\` or pass the paths)" >&2; exit 2; }
done
mkdir -p "$work"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "[student_encoder] building vitrine-index (release)"
cargo build -q --release -p vitrine-index-builder --bin vitrine-index
index=target/release/vitrine-index
for variant in $variants; do
    IFS=/ read -r n dim bits <<< "$variant"
    out="$work/layers-$n-dim-$dim${bits:+-bits-$bits}"
    student=()
    [ "$n" = 0 ] || student=(--student-layers "$n")
    [ -z "$bits" ] || student+=(--text-encoder-bits "$bits")
    build=("$index" build --catalog "$catalog" --checkpoint "$checkpoint" --config cpu --cache "$cache"
        --embeddings "$embeddings" --shards 1 --max-examples 4000 --dim "$dim" "${student[@]}" --out "$out")
    if [ -f "$out/build-report.json" ] && [ "$(cat "$out/command" 2>/dev/null)" = "${build[*]}" ]; then
        echo "[student_encoder] $variant: built before by the same command ($out)"
    else
        echo "[student_encoder] $variant: ${build[*]}"
        rm -f "$out/command"
        mkdir -p "$out"
        /usr/bin/time -v -o "$out/build.time" "${build[@]}" 2>&1 | tee "$out/build.log" | grep -v "^20" || true
        [ -f "$out/build-report.json" ] || { echo "student_encoder: the build of $variant failed (see $out/build.log)" >&2; exit 1; }
        echo "${build[*]}" > "$out/command"
    fi
    echo "[student_encoder] $variant: test split through the engine"
    "$index" eval --catalog "$catalog" --bundle "$out/bundle" --split test --out "$out/test.json" > "$out/eval.log" 2>&1
done

python3 - "$work" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "bash bench/student_encoder.sh${*:+ $*}" $variants <<'PY' | tee bench/results/student_encoder.md | python3 bench/results_section.py student_encoder
import gzip, json, os, pathlib, subprocess, sys
work, load_before, load_after, command, *variants = sys.argv[1:]
work = pathlib.Path(work)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
rows = []
for variant in variants:
    n, dim, *bits = variant.split("/")
    out = work / (f"layers-{n}-dim-{dim}" + (f"-bits-{bits[0]}" if bits else ""))
    report = json.loads((out / "build-report.json").read_text())
    test = json.loads((out / "test.json").read_text())
    folder = out / "bundle"
    manifest = json.loads((folder / "manifest.json").read_text())
    parts = {}
    for part in manifest["parts"]:
        data = (folder / part["file"]).read_bytes()
        parts[part["name"]] = (len(data), len(gzip.compress(data, 9)))
    rows.append((variant, report, test, parts))
print("# The browser's text encoder: the teacher's against distilled students (H&M)\n")
print(f"- command: `{command}`")
print(f"- commit: {commit}{' (uncommitted changes in the working tree)' if dirty else ''}")
print(f"- machine: {os.cpu_count()} cores, {cpu}, {mem:.0f} GiB; load average (1, 5, 15 min) before: {load_before}; after: {load_after}")
print("- every bundle: `vitrine-index build --max-examples 4000` (the nightly's setting) from the same checkpoint and embeddings; only the text encoder differs. "
      "Students: `--student-layers N` with the defaults (index-builder/src/student.rs: 600 steps of 64 query-like train texts, the catalog's tokens plus 3,000 common wordpieces)")
print("- val: the build's own figures, in tch with f32 weights before the text encoder is stored in int8 or 4 bits (title → product R@10 against every val item; cosine of the student's compact query to the teacher's over the same titles). "
      "Test: `vitrine-index eval --split test` through the browser engine (candle, int8), DESIGN.md §3's protocols\n")
print("| variant (layers/dims[/bits]) | text encoder | dims | layers (teacher's) | tokens | text encoder B (gzip) | bundle B (gzip) | val title R@10 | val cosine to teacher: mean / min | student time s | test TIR R@1/5/10 (random 100) | TIR R@10 full gallery | TGIR R@10/50 | OCIR R@10 | category acc |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for variant, report, test, parts in rows:
    s = report.get("student")
    stored = "4-bit" if variant.endswith("/4") else "int8"
    name = f"teacher's text tower, {stored}" if s is None else f"student, {len(s['teacher_layers'])} layers, {stored}"
    lay = "6 (all)" if s is None else ", ".join(map(str, s["teacher_layers"]))
    tokens = "30,522" if s is None else f"{s['vocab_size']:,}"
    te = parts["text_encoder"]
    total = tuple(sum(p[i] for p in parts.values()) for i in (0, 1))
    r10 = report["distill"]["val_title_r10_compact"] if s is None else s["val_title_r10_student"]
    cos = "1 (itself)" if s is None else f"{s['val_cosine_mean']:.4f} / {s['val_cosine_min']:.4f}"
    secs = "–" if s is None else f"{s['seconds']:.0f}"
    r = test["tir_random100"]
    print(f"| {variant} | {name} | {report['dims']} | {lay} | {tokens} | {te[0]:,} ({te[1]:,}) | {total[0]:,} ({total[1]:,}) | {r10:.2f} | {cos} | {secs} | "
          f"{r[0]:.1f}/{r[1]:.1f}/{r[2]:.1f} | {test['tir_full_gallery'][2]:.1f} | {test['tgir_mean'][0]:.1f}/{test['tgir_mean'][1]:.1f} | "
          f"{test['ocir_weighted'][0]:.1f} | {test['category_accuracy']:.1f} |")
print()
print("Bytes per part (raw, gzip -9):\n")
names = sorted({k for _, _, _, p in rows for k in p})
print("| part | " + " | ".join(v for v, *_ in rows) + " |")
print("|---|" + "---|" * len(rows))
for k in names:
    print(f"| {k} | " + " | ".join(f"{p[k][0]:,} ({p[k][1]:,})" if k in p else "–" for _, _, _, p in rows) + " |")
PY
echo "[student_encoder] wrote bench/results/student_encoder.md and its section of bench/RESULTS.md"
