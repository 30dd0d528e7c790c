"""Renders bench/nightly_cycle.sh's runs as Markdown (bench/results/nightly_cycle.md).

    python3 bench/nightly_cycle_report.py WORK LOAD_BEFORE LOAD_NIGHT_B COMMAND

WORK holds the state folder (audit records: night A first, then every night B
run), night-B.flags (one line per night B run) and night-B.log.
"""
import glob
import json
import os
import re
import subprocess
import sys

work, load_before, load_b, command = sys.argv[1:5]
audits = [json.load(open(p)) for p in sorted(glob.glob(f"{work}/state/audit/*.json"))]
night_a, nights_b = audits[0], audits[1:]
flags = open(f"{work}/night-B.flags").read().splitlines()


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def gib(b):
    return "—" if b is None else f"{b / 2**30:.2f}"


def show(v):
    return "—" if v is None else f"{v:.2f}"


def short(stage):
    return stage["stage"].split(" (")[0]


cpu = sh("lscpu | grep 'Model name' | cut -d: -f2")
mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
load_after = " ".join(open("/proc/loadavg").read().split()[:3])
commits = ", ".join(sorted({a["commit"] for a in audits}))
print("# Nightly cycle on H&M, cpu recipe")
print()
print(f"- machine: {os.cpu_count()} cores, {cpu}, {mem_gib:.0f} GiB, no GPU")
print(f"- load average (1, 5, 15 min) before the bench: {load_before}; before the last night B: {load_b}; after: {load_after}")
print(f"- commit: {sh('git rev-parse --short HEAD')} (the binaries were built from {commits})")
print(f"- command: `{command}`, night B rerun with the flags shown (`NIGHT_B_FLAGS=...`)")
print(
    f"- night A, `vitrine nightly --catalog catalog-A --publish publish --state state --candidate CHECKPOINT`: "
    f"{night_a['decision']} in {night_a['seconds']:.0f} s ("
    + ", ".join(f"{short(s)} {s['seconds']:.0f} s" for s in night_a["stages"])
    + "); its evaluation encoded every photo into the empty feature store"
)
print("- night B, `vitrine nightly --catalog catalog-B --publish publish --state state [flags]`; fine-tune budget: the cpu recipe's")
print()
for n, (audit, flag) in enumerate(zip(nights_b, flags), 1):
    changes = audit["catalog"]
    print(f"## Night B, run {n} (flags: {flag}): {audit['decision']} in {audit['seconds']:.0f} s")
    print()
    outcome = f"published version {audit['published']}." if audit.get("published") else audit.get("error") or ""
    print(f"Catalog changes: {changes['items']} items, {changes['added']} added, {changes['changed']} changed, {changes['removed']} removed; {outcome}")
    print()
    print("| stage | seconds | peak RSS of its tool, GiB |")
    print("|---|---|---|")
    for s in audit["stages"]:
        print(f"| {s['stage']} | {s['seconds']:.1f} | {gib(s.get('peak_rss_bytes'))} |")
    report_path = f"{work}/state/runs/{audit['run']}/bundle/build-report.json"
    if os.path.exists(report_path):
        build = json.load(open(report_path))
        stages = dict(build["stages"])
        print()
        print(
            f"Bundle build ({build['items']} items, {build['dims']} dims): "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in build["stages"])
            + f"; embedding {build['items'] / stages['embed']:.1f} items/s."
        )
    if audit["comparisons"]:
        print()
        print("| gate, val split | published | candidate | change |")
        print("|---|---|---|---|")
        for c in audit["comparisons"]:
            mark = " (regressed)" if c["regressed"] else ""
            print(f"| {c['task']} | {show(c['published'])} | {show(c['candidate'])} | {show(c['change'])}{mark} |")
    print()
log = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", open(f"{work}/night-B.log").read())
passes = re.findall(r"photo feature store photos=(\d+) encoded=(\d+)", log)
print("Photo feature store passes of the night B runs, in order (photos asked for / encoded): " + ", ".join(f"{p}/{e}" for p, e in passes) + ".")
