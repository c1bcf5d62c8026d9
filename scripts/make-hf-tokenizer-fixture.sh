#!/usr/bin/env bash
# Regenerates Tests/FineTuneTests/Fixtures/hf-tokenizer: the tokenizer files our exports write beside
# tokenizer.model for shared/fixtures/spm-bpe (HFTokenizerFilesTests writes them), and autotokenizer.json,
# the ids transformers' AutoTokenizer gives for every case of cases.jsonl from that directory (the tests
# compare our ids, with <s>, against them) and, for the dialogues the test writes, the ids of
# apply_chat_template with the chat template we write. Needs transformers, sentencepiece and jinja2: installed
# into a venv under .build. usage: scripts/make-hf-tokenizer-fixture.sh
set -euo pipefail
out=Tests/FineTuneTests/Fixtures/hf-tokenizer
venv=.build/tok-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import transformers, sentencepiece, jinja2" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q transformers sentencepiece protobuf jinja2
fi
mkdir -p "$out"
WRITE_HF_TOKENIZER_FILES="$PWD/$out" swift test --filter HFTokenizerFilesTests >/dev/null
cp ../shared/fixtures/spm-bpe/tokenizer.model "$out/tokenizer.model"
"$venv/bin/python" - "$out" ../shared/fixtures/spm-bpe/cases.jsonl <<'PY' 2>/dev/null
import json, sys
import transformers
from transformers import AutoTokenizer
out, cases = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(out)
texts = [json.loads(l)["text"] for l in open(cases)]
chats = []
for line in open(out + "/dialogues.jsonl"):
    ids = tok.apply_chat_template(json.loads(line)["messages"], tokenize=True)
    ids = ids if isinstance(ids, list) else ids["input_ids"]
    chats.append({"dialogue": line.rstrip("\n"), "ids": list(ids)})
json.dump({"transformers": transformers.__version__, "class": type(tok).__name__,
           "cases": [{"text": t, "ids": tok(t)["input_ids"]} for t in texts], "chats": chats},
          open(out + "/autotokenizer.json", "w"), indent=1, ensure_ascii=False)
print(f"{out}/autotokenizer.json: {len(texts)} cases from {type(tok).__name__}")
PY
rm "$out/tokenizer.model" "$out/dialogues.jsonl"
