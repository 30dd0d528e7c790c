"""Renders the ablation runner's per-row JSON reports as the Markdown tables
of bench/results/hm_ablation/README.md (run: python3 bench/render_ablation.py DIR)."""
import json
import pathlib
import sys

folder = pathlib.Path(sys.argv[1])
reports = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*.json"))]
order = ["none", "itc", "mlm", "mpfc", "mvc", "pac", "itc+mlm+mpfc", "+itm", "+mvc", "all", "all-unshared"]
reports.sort(key=lambda r: (order.index(r["row"]), r["seed"]))


def mean(xs):
    return sum(xs) / len(xs)


print("| row | seed | commit | pretrain steps | fine-tune steps | ITR R@1/5/10 | TIR R@1/5/10 | TGIR R@10/50 | CR acc/F1 | SCR acc/F1 | OCIR R@10/30/50 | meta-sum |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in reports:
    e = r["report"]
    x = e["xmr_random100"]
    cells = [
        r["row"], str(r["seed"]), r["commit"], str(r["pretrain_steps"]), str(r["finetune_steps"]),
        "/".join(f"{v:.1f}" for v in x["itr"]), "/".join(f"{v:.1f}" for v in x["tir"]),
        "/".join(f"{v:.1f}" for v in e["tgir_mean"]),
        f"{e['cr']['accuracy']:.1f}/{e['cr']['macro_f1']:.1f}", f"{e['scr']['accuracy']:.1f}/{e['scr']['macro_f1']:.1f}",
        "/".join(f"{v:.1f}" for v in e["ocir_weighted"]), f"**{e['meta_sum']:.1f}**",
    ]
    print("| " + " | ".join(cells) + " |")
print()
print("Full gallery (every test item), R@1/5/10:")
print()
print("| row | seed | ITR | TIR |")
print("|---|---|---|---|")
for r in reports:
    f = r["report"]["xmr_full_gallery"]
    print(f"| {r['row']} | {r['seed']} | " + "/".join(f"{v:.1f}" for v in f["itr"]) + " | " + "/".join(f"{v:.1f}" for v in f["tir"]) + " |")

# Rows run with several seeds: mean, sample standard deviation and range, so
# that a difference between rows can be set against the seed-to-seed spread.
by_row = {}
for r in reports:
    by_row.setdefault(r["row"], []).append(r)
if any(len(rs) > 1 for rs in by_row.values()):
    metrics = [
        ("ITR R@10", lambda e: e["xmr_random100"]["itr"][2]),
        ("TIR R@10", lambda e: e["xmr_random100"]["tir"][2]),
        ("TGIR R@10", lambda e: e["tgir_mean"][0]),
        ("CR acc", lambda e: e["cr"]["accuracy"]),
        ("SCR acc", lambda e: e["scr"]["accuracy"]),
        ("OCIR R@10", lambda e: e["ocir_weighted"][0]),
        ("meta-sum", lambda e: e["meta_sum"]),
    ]

    def spread(values):
        if len(values) == 1:
            return f"{values[0]:.1f} (one seed)"
        m = mean(values)
        sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return f"{m:.1f} ± {sd:.1f} ({min(values):.1f}–{max(values):.1f})"

    print()
    print("Over seeds: mean ± sample standard deviation (min–max):")
    print()
    print("| row | seeds | " + " | ".join(name for name, _ in metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    for row in order:
        rs = by_row.get(row)
        if not rs:
            continue
        seeds = ",".join(str(r["seed"]) for r in rs)
        print(f"| {row} | {seeds} | " + " | ".join(spread([get(r["report"]) for r in rs]) for _, get in metrics) + " |")
