#!/usr/bin/env bash
# The metafuse demo: renders the sample library in fixtures/library with the
# default rules and prints the resulting virtual tree.
set -euo pipefail
cd "$(dirname "$0")/.."

metafuse=target/release/metafuse
echo "== sample library: fixtures/library/sample.jsonl ($(wc -l < fixtures/library/sample.jsonl) files), preset: default"
"$metafuse" rules render --preset default < fixtures/library/sample.jsonl | sort | awk -F/ '
{
    # Print each path as an indented tree, showing directories once.
    prefix = ""
    for (i = 1; i < NF; i++) {
        prefix = prefix "/" $i
        if (!(prefix in seen)) { seen[prefix] = 1; printf "%*s%s/\n", (i - 1) * 2, "", $i }
    }
    printf "%*s%s\n", (NF - 1) * 2, "", $NF
}'
