#!/usr/bin/env bash
# Fuzzes the bundle reader with cargo-fuzz (libFuzzer; needs a nightly
# toolchain and `cargo install cargo-fuzz`): builds the targets, writes the
# seed corpora (a valid bundle and its parts), then runs each target for the
# given seconds (default 300). A failure leaves its input in
# fuzz/artifacts/<target>/ and stops with a non-zero status.
#
#   bash fuzz/run.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-300}
cargo +nightly fuzz build -O
# Built beside the targets (instrumented too, which does not matter for it).
"target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release/write_seeds"
for target in read_bundle decode_parts; do
    echo "== $target: ${seconds} s"
    cargo +nightly fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
done
