"""Renders the ablation runner's per-row JSON reports as the Markdown tables
of bench/results/hm_ablation/README.md (run: python3 bench/render_ablation.py DIR),
or, with --paper-shape, the headline rows (no pretraining; all six tasks) as
the paper's downstream tables, mean ± sample standard deviation over seeds, for
the section of bench/RESULTS.md:

    python3 bench/render_ablation.py DIR --paper-shape PAPER.md | python3 bench/results_section.py hm_quality "python3 bench/render_ablation.py"

where PAPER.md is ../shared/paper/fashionvil-results.md; or, with
--beside-paper PAPER.md, only the ablation table in the shape of the
paper's table 5 (downstream means, meta-sum), each row's change from the
no-pretraining row beside the paper's change, the paper's figures read from
PAPER.md (../shared/paper/fashionvil-results.md).
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


PAPER_ROWS = {"none": "none", "itc": "ITC", "mlm": "MLM", "mpfc": "MPFC", "pac": "PAC", "itc+mlm+mpfc": "ITC + MLM + MPFC",
              "+itm": "ITC + MLM + MPFC + ITM", "+mvc": "ITC + MLM + MPFC + ITM + MVC", "mvc": "MVC",
              "all": "all six (+ PAC)", "all-unshared": "all six, text and fusion encoders not shared"}


def paper_table(path, number):
    """The rows of table `number` of the paper's results file: {first cell: [other cells]}."""
    lines = pathlib.Path(path).read_text().split(f"## {number}.")[1].split("\n## ")[0].splitlines()
    rows = {}
    for line in lines:
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(cells[0]) <= {"-"} and cells[0] not in ("method", "category", "", "pretraining tasks"):
            rows[cells[0]] = cells[1:]
    return rows


def paper_ablation(path):
    """Table 5 of the paper's results file: {row label: [ITR, TIR, TGIR, SCR, OCIR, meta-sum]}."""
    lines = pathlib.Path(path).read_text().split("## 5.")[1].splitlines()
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1].replace(".", "").isdigit():
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


def beside_paper(paper_path):
    paper = paper_ablation(paper_path)
    by_row = {}
    for r in reports:
        by_row.setdefault(r["row"], []).append(r["report"])

    def means(e):
        x = e["xmr_random100"]
        return [mean(x["itr"]), mean(x["tir"]), mean(e["tgir_mean"]), (e["scr"]["accuracy"] + e["scr"]["macro_f1"]) / 2,
                mean(e["ocir_weighted"]), e["meta_sum"]]

    def summary(row):
        cols = list(zip(*[means(e) for e in by_row[row]]))
        return [mean(c) for c in cols], [sd(c) for c in cols]

    base = summary("none")[0] if "none" in by_row else None
    print("| pretraining tasks | seeds | ITR | TIR | TGIR | SCR | OCIR | meta-sum | change from none | paper meta-sum | paper change from none |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    paper_none = paper["none"][5]
    for row in order:
        if row not in by_row:
            continue
        m, d = summary(row)
        n = len(by_row[row])
        cell = lambda i: f"{m[i]:.1f} ± {d[i]:.1f}" if n > 1 else f"{m[i]:.1f}"
        change = f"{m[5] - base[5]:+.1f}" if base else "—"
        p = paper.get(PAPER_ROWS[row])
        print(f"| {row} | {n} | " + " | ".join(cell(i) for i in range(6)) + f" | {change} | "
              + (f"{p[5]:.2f} | {p[5] - paper_none:+.2f} |" if p else "— | — |"))
    print()
    print("H&M columns: mean ± sample standard deviation over the seeds (ITR, TIR: mean of R@1/5/10, random-100;")
    print("TGIR: mean of R@10/50; SCR: mean of accuracy and macro-F1; OCIR: mean of R@10/30/50 weighted by")
    print("category frequency). Paper: table 5 of ../shared/paper/fashionvil-results.md (FashionGen, FashionIQ,")
    print("Polyvore; its ITR/TIR come from a setting the paper's tables do not spell out): compare changes, not values.")


if "--beside-paper" in sys.argv:
    beside_paper(sys.argv[sys.argv.index("--beside-paper") + 1])
    sys.exit(0)


if "--paper-shape" in sys.argv:
    headline = {"none": "no pretraining + multi-task fine-tune", "all": "all six pretext tasks + multi-task fine-tune"}
    rows = {row: [r for r in reports if r["row"] == row] for row in headline}

    def cell(row, get):
        values = [get(r["report"]) for r in rows[row]]
        return f"{mean(values):.1f} ± {sd(values):.1f}"

    def table(title, columns, paper_rows=()):
        print(f"{title}")
        print()
        print("| model | seeds | " + " | ".join(name for name, _ in columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for row, label in headline.items():
            seeds = ",".join(str(r["seed"]) for r in rows[row])
            print(f"| H&M: {label} | {seeds} | " + " | ".join(cell(row, get) for _, get in columns) + " |")
        for label, values in paper_rows:
            print(f"| paper: {label} | — | " + " | ".join(values) + " |")
        print()

    print("# Quality on H&M beside the paper (cpu recipe, test split)")
    print()
    steps = sorted({(r["pretrain_steps"], r["finetune_steps"]) for r in reports if r["pretrain_steps"]})
    print(f"Rows from `{folder}/` (commands, commits and every seed there): the cpu recipe")
    print(f"(frozen EfficientNet-Lite0 features, {', '.join(f'{p} pretraining steps, {f} multi-task fine-tune steps' for p, f in steps)}, batch 32),")
    print("mean ± sample standard deviation over the seeds listed. Protocols: DESIGN.md section 3 (`vitrine-train eval`).")
    print()
    paper_path = sys.argv[sys.argv.index("--paper-shape") + 1]
    xmr, tgir, cr = paper_table(paper_path, 1), paper_table(paper_path, 2), paper_table(paper_path, 3)
    fashiongen = lambda t, names: [(f"{n} (FashionGen)", t[n][:len(t[n]) - 1]) for n in names]
    # The paper's TGIR columns per category; its mean over dress, shirt and toptee of R@10 and of R@50.
    tgir_mean = lambda col: [f"{sum(float(tgir[f'{c} R@{k}'][col]) for c in ('dress', 'shirt', 'toptee')) / 3:.2f}" for k in (10, 50)]
    k = ("R@1", "R@5", "R@10")
    table("Cross-modal retrieval, random 100 of the same subcategory (1,000 queries, 5 draws); paper: FashionGen:",
          [(f"ITR {n}", lambda e, i=i: e["xmr_random100"]["itr"][i]) for i, n in enumerate(k)]
          + [(f"TIR {n}", lambda e, i=i: e["xmr_random100"]["tir"][i]) for i, n in enumerate(k)],
          fashiongen(xmr, ("Ours -e2e", "Ours -pt", "Ours")))
    table("Cross-modal retrieval, full gallery (every test item):",
          [(f"ITR {n}", lambda e, i=i: e["xmr_full_gallery"]["itr"][i]) for i, n in enumerate(k)]
          + [(f"TIR {n}", lambda e, i=i: e["xmr_full_gallery"]["tir"][i]) for i, n in enumerate(k)])
    table("Text-guided image retrieval, mean over categories (H&M colour-variant triplets); paper: FashionIQ:",
          [("R@10", lambda e: e["tgir_mean"][0]), ("R@50", lambda e: e["tgir_mean"][1])],
          [("Ours -pt (FashionIQ, mean of dress/shirt/toptee)", tgir_mean(8)), ("Ours (FashionIQ)", tgir_mean(9))])
    table("Category and subcategory recognition; paper: FashionGen:",
          [("CR acc", lambda e: e["cr"]["accuracy"]), ("CR macro-F1", lambda e: e["cr"]["macro_f1"]),
           ("SCR acc", lambda e: e["scr"]["accuracy"]), ("SCR macro-F1", lambda e: e["scr"]["macro_f1"])],
          fashiongen(cr, ("Ours -pt", "Ours")))
    table("Outfit complementary item retrieval, weighted by category frequency (H&M baskets); paper: Polyvore Outfits:",
          [(f"OCIR {n}", lambda e, i=i: e["ocir_weighted"][i]) for i, n in enumerate(("R@10", "R@30", "R@50"))]
          + [("meta-sum", lambda e: e["meta_sum"])])
    print("The ablation in the shape of the paper's table 5, beside the paper's meta-sums:")
    print()
    beside_paper(sys.argv[sys.argv.index("--paper-shape") + 1])
    print()
    print("These are different data from the paper's (H&M articles and baskets, not FashionGen, FashionIQ or")
    print("Polyvore), a 2-core CPU budget, and a frozen image encoder: read the paper's figures for orientation only.")
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
