#!/usr/bin/env bash
# Regenerates Tests/ModelTests/Fixtures/policy-export: our export of a small policy (lm_head + value head),
# and transformers.json, what transformers' LlamaForCausalLM computes from it and how it loaded it
# (PolicyExportFixtureTests compares against both). Needs torch and transformers: installed into a venv
# under .build (torch's CPU wheel from /opt/wheels where the machine has it, else PyPI's).
# usage: scripts/make-policy-export-fixture.sh
set -euo pipefail
out=Tests/ModelTests/Fixtures/policy-export
venv=.build/fixture-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
    python3 -m venv "$venv"
    wheel=$(ls /opt/wheels/torch-*cpu*.whl 2>/dev/null | head -1 || true)
    "$venv/bin/pip" install -q ${wheel:-torch} transformers safetensors numpy
fi
mkdir -p "$out"
WRITE_POLICY_EXPORT="$PWD/$out" swift test --filter PolicyExportFixtureTests >/dev/null
"$venv/bin/python" - "$out" <<'PY'
import json, sys
import torch
from transformers import LlamaForCausalLM

out = sys.argv[1]
model, info = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32, output_loading_info=True)
tokens = [1, 5, 9, 3, 16, 2, 7, 11]
with torch.no_grad():
    logits = model(torch.tensor([tokens])).logits[0].reshape(-1)
json.dump({"tokens": tokens, "logits": [float(x) for x in logits],
           "missing_keys": sorted(info["missing_keys"]), "unexpected_keys": sorted(info["unexpected_keys"]),
           "transformers": __import__("transformers").__version__},
          open(out + "/transformers.json", "w"), indent=1)
print(f"{out}/transformers.json: {len(logits)} logits; missing {info['missing_keys']}, unused {info['unexpected_keys']}")
PY
