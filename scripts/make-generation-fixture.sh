#!/usr/bin/env bash
# Regenerates Tests/InferenceTests/Fixtures/generation: our export of a small random model and transformers.json,
# what transformers computes from it (TransformersFixtureTests compares against it): greedy continuations of
# ragged prompts by `generate(do_sample=False)` (KV-cached, the prompts batched with left padding, and checked
# here against each prompt generated alone), and log_softmax of the logits gathered at given completions.
# Needs torch and transformers: installed into a venv under .build (torch's CPU wheel from /opt/wheels where the
# machine has it, else PyPI's).
# usage: scripts/make-generation-fixture.sh
set -euo pipefail
out=Tests/InferenceTests/Fixtures/generation
venv=.build/fixture-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
    python3 -m venv "$venv"
    wheel=$(ls /opt/wheels/torch-*cpu*.whl 2>/dev/null | head -1 || true)
    "$venv/bin/pip" install -q ${wheel:-torch} transformers safetensors numpy
fi
mkdir -p "$out"
WRITE_GENERATION_FIXTURE="$PWD/$out" swift test --filter TransformersFixtureTests/theExportIsTheFixturesModel >/dev/null
"$venv/bin/python" - "$out" <<'PY'
import json, random, sys
import torch
import transformers
from transformers import LlamaForCausalLM

out = sys.argv[1]
model = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
model.generation_config.eos_token_id = None  # 64 tokens every time: no early stop to agree on
model.generation_config.pad_token_id = 0
rng = random.Random(5)
V = model.config.vocab_size
prompts = [[1] + [rng.randrange(3, V) for _ in range(n - 1)] for n in (3, 9, 1, 17, 30)]
new = 64
# Batched, left-padded: what the engine's ragged batch must equal.
width = max(map(len, prompts))
ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
with torch.no_grad():
    batched = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                             min_new_tokens=new, output_scores=True, return_dict_in_generate=True)
greedy = [row[width:].tolist() for row in batched.sequences]
gap = min(float((s.topk(2).values[:, 0] - s.topk(2).values[:, 1]).min()) for s in batched.scores)
for p, g in zip(prompts, greedy):
    with torch.no_grad():
        alone = model.generate(input_ids=torch.tensor([p]), do_sample=False, max_new_tokens=new, min_new_tokens=new)
    assert alone[0, len(p):].tolist() == g, "batched and unbatched generate disagree"
scored = []
for n, m in ((1, 5), (6, 12), (20, 25), (2, 1)):
    prompt = [1] + [rng.randrange(3, V) for _ in range(n - 1)]
    completion = [rng.randrange(3, V) for _ in range(m)]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    scored.append({"prompt": prompt, "completion": completion,
                   "logprobs": [float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(completion)]})
json.dump({"prompts": prompts, "new_tokens": new, "greedy": greedy, "smallest_gap": gap, "scored": scored,
           "transformers": transformers.__version__, "torch": torch.__version__},
          open(out + "/transformers.json", "w"), indent=1)
print(f"{out}/transformers.json: {len(prompts)} prompts x {new} greedy tokens (smallest top-2 gap {gap:.3g}), "
      f"{len(scored)} scored completions")
PY
