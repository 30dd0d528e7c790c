"""Renders the ablation runner's per-row JSON reports as the Markdown tables
of bench/results/hm_ablation/README.md (run: python3 bench/render_ablation.py DIR),
or, with --paper-shape, the headline rows (no pretraining; all six tasks) as
the paper's downstream tables, mean ± sample standard deviation over seeds, for
the section of bench/RESULTS.md:

    python3 bench/render_ablation.py DIR --paper-shape | python3 bench/results_section.py hm_quality "python3 bench/render_ablation.py"
"""
import json
import pathlib
import sys

folder = pathlib.Path(sys.argv[1])
reports = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*.json"))]
order = ["none", "itc", "mlm", "mpfc", "mvc", "pac", "itc+mlm+mpfc", "+itm", "+mvc", "all", "all-unshared"]
reports.sort(key=lambda r: (order.index(r["row"]), r["seed"]))


def mean(xs):
    return sum(xs) / len(xs)


def sd(xs):
    m = mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0


if "--paper-shape" in sys.argv:
    headline = {"none": "no pretraining + multi-task fine-tune", "all": "all six pretext tasks + multi-task fine-tune"}
    rows = {row: [r for r in reports if r["row"] == row] for row in headline}

    def cell(row, get):
        values = [get(r["report"]) for r in rows[row]]
        return f"{mean(values):.1f} ± {sd(values):.1f}"

    def table(title, columns):
        print(f"{title}")
        print()
        print("| model (H&M test split) | seeds | " + " | ".join(name for name, _ in columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for row, label in headline.items():
            seeds = ",".join(str(r["seed"]) for r in rows[row])
            print(f"| {label} | {seeds} | " + " | ".join(cell(row, get) for _, get in columns) + " |")
        print()

    print("# Quality on H&M beside the paper (cpu recipe, test split)")
    print()
    print("Rows from `bench/results/hm_ablation/` (commands, commits and every seed there): the cpu recipe")
    print("(frozen EfficientNet-Lite0 features, 300 pretraining steps, 150 multi-task fine-tune steps, batch 32),")
    print("mean ± sample standard deviation over the seeds listed. Protocols: DESIGN.md section 3 (`vitrine-train eval`).")
    print()
    k = ("R@1", "R@5", "R@10")
    table("Cross-modal retrieval, random 100 of the same subcategory (1,000 queries, 5 draws); paper: FashionGen:",
          [(f"ITR {n}", lambda e, i=i: e["xmr_random100"]["itr"][i]) for i, n in enumerate(k)]
          + [(f"TIR {n}", lambda e, i=i: e["xmr_random100"]["tir"][i]) for i, n in enumerate(k)])
    table("Cross-modal retrieval, full gallery (every test item):",
          [(f"ITR {n}", lambda e, i=i: e["xmr_full_gallery"]["itr"][i]) for i, n in enumerate(k)]
          + [(f"TIR {n}", lambda e, i=i: e["xmr_full_gallery"]["tir"][i]) for i, n in enumerate(k)])
    table("Text-guided image retrieval, mean over categories (H&M colour-variant triplets); paper: FashionIQ:",
          [("R@10", lambda e: e["tgir_mean"][0]), ("R@50", lambda e: e["tgir_mean"][1])])
    table("Category and subcategory recognition; paper: FashionGen:",
          [("CR acc", lambda e: e["cr"]["accuracy"]), ("CR macro-F1", lambda e: e["cr"]["macro_f1"]),
           ("SCR acc", lambda e: e["scr"]["accuracy"]), ("SCR macro-F1", lambda e: e["scr"]["macro_f1"])])
    table("Outfit complementary item retrieval, weighted by category frequency (H&M baskets); paper: Polyvore Outfits:",
          [(f"OCIR {n}", lambda e, i=i: e["ocir_weighted"][i]) for i, n in enumerate(("R@10", "R@30", "R@50"))]
          + [("meta-sum", lambda e: e["meta_sum"])])
    print("These are different data from the paper's (H&M articles and baskets, not FashionGen, FashionIQ or")
    print("Polyvore), a 2-core CPU budget, and a frozen image encoder: read the paper's figures for orientation only.")
    print("The paper's own figures are not reproduced in this table: they could not be read on the machines these")
    print("figures were made on (no network beyond package registries; the reachable copies of the paper hold its")
    print("abstract only), and figures quoted without their source are not given here.")
    sys.exit(0)


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
