#!/usr/bin/env python3
"""Prints whether prepared directories hold the same token stream: the SHA-256 of every source's shards in
index order, headers skipped (they hold per-shard counts, which depend on the shard boundaries).

    python3 scripts/token-stream-sha256.py LABEL DIR DIR...
"""
import hashlib
import json
import sys


def stream(directory):
    h = hashlib.sha256()
    for source in json.load(open(directory + "/index.json"))["sources"]:
        for shard in source["shards"]:
            h.update(open(directory + "/" + shard["file"], "rb").read()[64:])
    return h.hexdigest()


label, directories = sys.argv[1], sys.argv[2:]
print(f"token streams of {label} identical:", len({stream(d) for d in directories}) == 1)
