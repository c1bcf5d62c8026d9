#!/usr/bin/env python3
"""The sentencepiece library as a reference for the tests: reads JSON Lines {"text": ...} on stdin and
writes {"ids": [...], "decoded": ...} per line for the model given as the first argument."""
import json
import sys

import sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
for line in sys.stdin:
    text = json.loads(line)["text"]
    ids = sp.encode(text)
    print(json.dumps({"ids": ids, "decoded": sp.decode(ids)}))
