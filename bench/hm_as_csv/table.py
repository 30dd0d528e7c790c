"""Renders bench/hm_as_csv/run.sh's four evaluations as one markdown table.
Usage: python3 table.py RESULTS_DIR > RESULTS_DIR/README.md"""
import json
import os
import subprocess
import sys

out = sys.argv[1]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
models = [("hm", "full H&M (colour groups, baskets)"), ("hm-as-csv", "H&M as a shop's CSV (no groups, no baskets)")]
rulers = [("hm", "H&M's colour-variant triplets"), ("hm-as-csv", "the CSV's attribute-difference triplets")]


def fmt(values):
    return "/".join(f"{v:.1f}" for v in values)


print("# H&M as a shop's CSV beside the full H&M run (test split, seed 7)\n")
print(f"Commit {commit}; machine: 2 cores, no GPU; command: `bash bench/hm_as_csv/run.sh` (the main job on the CSV, then")
print("`vitrine-train eval --split test` of both main-job models on both catalogs). The CSV keeps H&M's fixed split in a")
print("column, so that both models are read on the same 1,172 test items; it has no colour groups and no baskets, so its")
print("model learns TGIR from attribute differences (items of one product type that differ in one attribute) and skips OCIR.\n")
print("| model | TGIR ruler | ITR R@1/5/10 | TIR R@1/5/10 | TGIR R@10/50 | CR acc/F1 | SCR acc/F1 | OCIR R@10/30/50 weighted | OCIR macro |")
print("|---|---|---|---|---|---|---|---|---|")
for model, model_name in models:
    for ruler, ruler_name in rulers:
        path = os.path.join(out, f"{model}-model-on-{ruler}-test.json")
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        ocir = fmt(r["ocir_weighted"]) if r["ocir"] else "—"
        ocir_macro = fmt(r["ocir_macro"]) if r["ocir"] else "—"
        tgir = fmt(r["tgir_mean"]) if r["tgir"] else "—"
        print(
            f"| {model_name} | {ruler_name} | {fmt(r['xmr_random100']['itr'])} | {fmt(r['xmr_random100']['tir'])} | {tgir} "
            f"| {r['cr']['accuracy']:.1f}/{r['cr']['macro_f1']:.1f} | {r['scr']['accuracy']:.1f}/{r['scr']['macro_f1']:.1f} | {ocir} | {ocir_macro} |"
        )
print("\nRandom-100 cross-modal retrieval (ties never won); TGIR: mean over categories; OCIR (—) only where the model")
print("trained its head and the catalog has baskets to ask from.")
