#!/usr/bin/env python3
"""Writes Parquet files with pyarrow, and what pyarrow reads back from each, for the Parquet reader's tests.

    python3 scripts/parquet-cases.py OUTDIR

OUTDIR/cases.json lists {"file", "fields", "rows"} per case: `rows` is pyarrow's own reading of `fields`
(pq.read_table(...).to_pylist()), so the Swift reader is checked against the library, not against what this
script meant to write. OUTDIR/bad/ holds the inputs the reader must refuse, and bad.json what each must name.
"""
import json
import os
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq

out = sys.argv[1]
os.makedirs(out + "/bad", exist_ok=True)
rng = random.Random(20261203)
cases = []


def without_nulls(value):
    """A JSON Lines file's view of a row: a null field is absent (a null inside a list stays)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def write(name, table, fields=None, **options):
    path = f"{out}/{name}.parquet"
    pq.write_table(table, path, **options)
    fields = fields or table.column_names
    rows = pq.read_table(path, columns=fields).to_pylist()
    cases.append({"file": path, "fields": fields, "rows": [without_nulls(r) for r in rows]})


def words(n):
    pool = ["the", "quick", "brown", "fox", "naïve", "café", "日本語", "emoji 🦙", "3.14159", "\n", "\t", " "]
    return " ".join(rng.choice(pool) for _ in range(n))


# Flat strings with nulls, empty strings and multi-byte UTF-8, beside the numbers a fine-tuning set carries.
texts = [words(rng.randrange(0, 40)) for _ in range(300)]
for i in range(0, 300, 17):
    texts[i] = None
for i in range(5, 300, 23):
    texts[i] = ""
flat = pa.table({
    "text": pa.array(texts, pa.string()),
    "id": pa.array([f"doc-{i}" for i in range(300)]),
    "score": pa.array([None if i % 13 == 0 else rng.random() for i in range(300)], pa.float64()),
    "tokens": pa.array([rng.randrange(-2**40, 2**40) for i in range(300)], pa.int64()),
    "votes": pa.array([rng.randrange(-1000, 1000) for i in range(300)], pa.int32()),
    "weight": pa.array([rng.random() for _ in range(300)], pa.float32()),
    "safety": pa.array([None if i % 7 == 0 else i % 3 == 0 for i in range(300)], pa.bool_()),
})
for codec in ["none", "snappy", "gzip", "zstd"]:
    for version in ["1.0", "2.0"]:
        write(f"flat-{codec}-v{version[0]}", flat, compression=codec, data_page_version=version,
              data_page_size=2048, row_group_size=120)
write("flat-plain", flat, use_dictionary=False, compression="snappy", data_page_size=1024)
write("flat-plain-v2", flat, use_dictionary=False, compression="zstd", data_page_version="2.0", data_page_size=1024)
write("flat-checksums", flat, compression="snappy", write_page_checksum=True, data_page_size=1024)

# A dictionary that outgrows its limit part-way through a chunk, so later pages fall back to PLAIN; a few
# repeated values first, so the dictionary pages are used.
unique = [f"{i % 50} {words(rng.randrange(1, 30))}" if i < 400 else f"unique {i} {words(20)}" for i in range(3000)]
write("dictionary-fallback", pa.table({"text": unique}), compression="snappy", dictionary_pagesize_limit=4096,
      data_page_size=2048, row_group_size=3000)
write("dictionary-fallback-v2", pa.table({"text": unique}), compression="zstd", dictionary_pagesize_limit=4096,
      data_page_size=2048, data_page_version="2.0")

# Values larger than a page, and many row groups.
big = [words(5), "x" * 70000, words(3000), "", "é" * 40000, None, words(2)]
write("large-values", pa.table({"text": big}), compression="snappy", data_page_size=1024)
write("large-values-plain", pa.table({"text": big}), compression="zstd", use_dictionary=False, data_page_size=1024)
write("row-groups", pa.table({"text": texts}), compression="gzip", row_group_size=7)

# Chat and preference sets: messages as a list of {role, content}; chosen/rejected as lists of messages.
roles = ["system", "user", "assistant"]
def dialogue():
    if rng.random() < 0.05:
        return None
    if rng.random() < 0.05:
        return []
    turns = [{"role": roles[1 + t % 2], "content": words(rng.randrange(0, 25))} for t in range(rng.randrange(1, 6))]
    if rng.random() < 0.1:
        turns[0] = {"role": "system", "content": None}
    return turns
message_type = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
chat = pa.table({
    "messages": pa.array([dialogue() for _ in range(200)], message_type),
    "prompt": pa.array([words(8) for _ in range(200)]),
    "chosen": pa.array([dialogue() for _ in range(200)], message_type),
    "rejected": pa.array([dialogue() for _ in range(200)], message_type),
    "rating": pa.array([rng.choice(["significantly better", "better", "slightly better", None]) for _ in range(200)]),
    "score_chosen": pa.array([rng.random() * 10 for _ in range(200)]),
    "tags": pa.array([[words(1) for _ in range(rng.randrange(0, 4))] if i % 9 else None for i in range(200)],
                     pa.list_(pa.string())),
})
for codec, version in [("snappy", "1.0"), ("zstd", "2.0"), ("none", "1.0")]:
    write(f"chat-{codec}-v{version[0]}", chat, compression=codec, data_page_version=version, data_page_size=1024,
          row_group_size=64)

# datatrove's ParquetWriter: text, id and a metadata struct, snappy; only text and id are read.
datatrove = pa.table({
    "text": pa.array([words(rng.randrange(1, 60)) for _ in range(100)]),
    "id": pa.array([f"<urn:uuid:{rng.getrandbits(64):016x}>" for _ in range(100)]),
    "metadata": pa.array([{"dump": "CC-MAIN-2024-10", "url": f"https://example.com/{i}", "language_score": rng.random(),
                           "token_count": rng.randrange(10, 1000)} for i in range(100)]),
})
write("datatrove", datatrove, fields=["text", "id"], compression="snappy")

# The prepare test's corpus, as Parquet (several row groups) and as JSON Lines with the same documents.
documents = [f"document {i}: {words(rng.randrange(5, 80))}" for i in range(600)]
pq.write_table(pa.table({"text": documents, "id": list(range(600))}), f"{out}/corpus.parquet",
               compression="snappy", row_group_size=37)
with open(f"{out}/corpus.jsonl", "w") as f:
    for d in documents:
        f.write(json.dumps({"text": d, "id": 0}, ensure_ascii=False) + "\n")

# Inputs to refuse, each with what the error must name.
bad = []
good = f"{out}/flat-snappy-v1.parquet"
data = open(good, "rb").read()
def bad_file(name, content, *names):
    path = f"{out}/bad/{name}.parquet"
    open(path, "wb").write(content)
    bad.append({"file": path, "names": list(names)})
bad_file("truncated", data[: len(data) // 2], "truncated")
bad_file("bad-magic", b"PAR0" + data[4:], "not a Parquet file")
bad_file("empty", b"", "too short")
checked = open(f"{out}/flat-checksums.parquet", "rb").read()
meta = pq.ParquetFile(f"{out}/flat-checksums.parquet").metadata.row_group(0).column(0)
at = meta.data_page_offset + 200
bad_file("corrupt-page", checked[:at] + bytes([checked[at] ^ 0xFF]) + checked[at + 1:], "row group 1",
         "column 'text'", "CRC mismatch")
# Garbage over a data page (no CRC to catch it): refused by the decoder, never a crash.
meta = pq.ParquetFile(good).metadata.row_group(0).column(0)
at = meta.data_page_offset + 40
bad_file("garbled-page", data[:at] + bytes(range(256)) * 2 + data[at + 512:], "row group 1", "column 'text'")
for codec in ["lz4", "brotli"]:
    path = f"{out}/bad/codec-{codec}.parquet"
    pq.write_table(flat, path, compression=codec)
    bad.append({"file": path, "names": ["row group 1", "column 'text'", "page 1", "LZ4" if codec == "lz4" else "BROTLI"]})
path = f"{out}/bad/delta.parquet"
pq.write_table(pa.table({"text": texts}), path, use_dictionary=False, column_encoding={"text": "DELTA_BYTE_ARRAY"})
bad.append({"file": path, "names": ["column 'text'", "page 1", "DELTA_BYTE_ARRAY"]})
path = f"{out}/bad/no-text.parquet"
pq.write_table(pa.table({"content": ["a", "b"]}), path)
bad.append({"file": path, "names": ["no column 'text'", "content"]})
path = f"{out}/bad/not-utf8.parquet"
pq.write_table(pa.table({"text": pa.array([b"fine", b"caf\xe9 latin-1", b"also fine"], pa.binary())}), path)
# Page 1 is the dictionary page; the values are on page 2.
bad.append({"file": path, "names": ["row group 1", "column 'text'", "page 2", "row 2", "not valid UTF-8 at byte 4"]})
path = f"{out}/bad/nested.parquet"
pq.write_table(pa.table({"text": pa.array([[["a"]], [["b", "c"]]], pa.list_(pa.list_(pa.string())))}), path)
bad.append({"file": path, "names": ["column 'text'", "a list of lists"]})
path = f"{out}/bad/map.parquet"
pq.write_table(pa.table({"text": pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string()))}), path)
bad.append({"file": path, "names": ["column 'text'", "a map"]})
path = f"{out}/bad/struct.parquet"
pq.write_table(pa.table({"text": pa.array([{"a": "x"}], pa.struct([("a", pa.string())]))}), path)
bad.append({"file": path, "names": ["column 'text'", "a struct"]})

json.dump(cases, open(f"{out}/cases.json", "w"), ensure_ascii=False)
json.dump(bad, open(f"{out}/bad.json", "w"), ensure_ascii=False)
print(f"wrote {len(cases)} cases and {len(bad)} bad inputs to {out}")
