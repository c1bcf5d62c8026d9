#!/usr/bin/env python3
"""Converts JSON Lines to Parquet with pyarrow, as a user would a Hub dataset (tests read both and compare).

    python3 scripts/jsonl-to-parquet.py IN.jsonl OUT.parquet [ROWS_PER_GROUP] [CODEC]

Nested values become Parquet's lists and structs (messages as a list of {role, content}).
"""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
group = int(sys.argv[3]) if len(sys.argv) > 3 else 64
codec = sys.argv[4] if len(sys.argv) > 4 else "snappy"
pq.write_table(pa.Table.from_pylist(rows), sys.argv[2], row_group_size=group, compression=codec)
