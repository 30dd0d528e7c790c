"""Replaces (or appends) one bench's section of bench/RESULTS.md.

    python3 bench/results_section.py NAME [WRITER] < body.md

The section sits between `<!-- NAME:begin ... -->` and `<!-- NAME:end -->`;
every heading of the body goes one level down (`# ` → `## `).
"""
import pathlib
import re
import sys

name = sys.argv[1]
writer = sys.argv[2] if len(sys.argv) > 2 else f"bash bench/{name}.sh"
body = re.sub(r"(?m)^(#+ )", r"#\1", sys.stdin.read())
section = f"<!-- {name}:begin (written by {writer}; do not edit by hand) -->\n{body.rstrip()}\n<!-- {name}:end -->"
results = pathlib.Path(__file__).with_name("RESULTS.md")
text = results.read_text() if results.exists() else "# Benchmarks\n"
pattern = re.compile(rf"<!-- {re.escape(name)}:begin.*?<!-- {re.escape(name)}:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
results.write_text(text)
