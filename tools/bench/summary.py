#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Print the Markdown summary of a run.sh run from its JSON-lines results.

usage: summary.py RESULTS.jsonl "COMMAND LINE"
"""

import datetime
import json
import os
import sys

import common as C


def main(argv):
    path, cmd = argv[1], argv[2]
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    rows.sort(key=lambda r: int(r["row"][0]))
    print()
    print("## stfs benchmark summary")
    print()
    print("Command: `%s` (%s)" % (cmd, datetime.datetime.now().strftime("%Y-%m-%d %H:%M")))
    print()
    for line in C.environment():
        print("    " + line)
    print()
    print("Ratio = stfs / baseline: throughput for rows 1-3, 5, 6 and 8 (higher is better), "
          "time for row 4 and mount time (lower is better), memory / model size for row 7; "
          "row 6d counts READ requests (must be 0). "
          "Medians of several runs on a shared machine: indicative, never pass/fail.")
    if any(r.get("quick") for r in rows):
        print()
        print("**--quick: tiny sizes, a smoke test; these figures measure nothing.**")
    print()
    print("| row | measure | stfs | baseline | ratio | target |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %s | %s | %s |" % (
            r["row"], r["what"], r["stfs"], r["baseline"],
            "" if r["ratio"] is None else "%.2f" % r["ratio"], C.target_cell(r)))
    missed = [r for r in rows if r["met"] is False]
    print()
    if any(r.get("quick") for r in rows):
        print("Targets not evaluated (--quick).")
    else:
        print("%d figures with a target, %d missed." % (sum(1 for r in rows if r["met"] is not None), len(missed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
