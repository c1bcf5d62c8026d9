#!/usr/bin/env python3
"""Prints the first N distinct prompts of a JSON Lines file of {"prompt", ...} lines as {"prompt"} lines: the
prompt sets of the demo's rejection sampling and PPO.

    python3 scripts/distinct-prompts.py FILE.jsonl N [SKIP]

SKIP distinct prompts are passed over first, so that two sets drawn from one file do not overlap.
"""
import json
import sys

path, count = sys.argv[1], int(sys.argv[2])
skip = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seen = list(dict.fromkeys(json.loads(line)["prompt"] for line in open(path, encoding="utf-8") if line.strip()))
print("\n".join(json.dumps({"prompt": p}) for p in seen[skip:skip + count]))
