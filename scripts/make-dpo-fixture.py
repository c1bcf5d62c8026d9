#!/usr/bin/env python3
"""Regenerate the DPO fixture (Tests/FineTuneTests/Fixtures/dpo) from the shared tiny model, two ways that must agree:

  1. a float64 computation written from the formulas, not from our code:
       log π(y) = Σ over the completion's tokens of log_softmax(logits)[token],
       L = mean over pairs of −log σ(β [(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))]),
     the reference being the starting model; two steps of AdamW (betas 0.9/0.95, eps 1e-5, weight decay 0.1 on
     tensors of two or more dimensions) after clip_grad_norm_(1.0), every step on all 8 pairs;
  2. TRL's DPOTrainer (float32) on the same token ids: its own collator, loss and Trainer loop, with only its
     text tokenization bypassed (the pairs are token ids already) and the optimizer given the same parameter groups.

    python3 -m venv .build/fixture-venv && .build/fixture-venv/bin/pip install torch transformers safetensors trl
    .build/fixture-venv/bin/python scripts/make-dpo-fixture.py [MODEL_DIR] [OUT_DIR]

TRL's float32 path departs from the formula by more than float32 rounding (its gradients by ~2e-3 of each
tensor's largest, measured here on its 1.16 with transformers 5.24), so its parameters agree with float64's
only to AdamW's bound (an element whose gradient is mostly error moves by up to lr a step either way); the
float64 computation is the strict reference.

Writes OUT_DIR/pairs.json (the pairs: prompt, chosen and rejected ids; β, lr) and OUT_DIR/expected.safetensors
(float64 results stored as float32: ref_logps [8, 2], loss [2] per step, step2.<name> for every parameter;
trl_loss [2] and trl_step2.<name>, TRL's). Not run by CI; the committed fixture is what `make test` reads.
"""
import json
import math
import os
import random
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

model_dir = sys.argv[1] if len(sys.argv) > 1 else "../shared/fixtures/llama-tiny"
out = sys.argv[2] if len(sys.argv) > 2 else "Tests/FineTuneTests/Fixtures/dpo"
BETA, LR, STEPS, PAIRS = 0.1, 1e-3, 2, 8
os.makedirs(out, exist_ok=True)

base = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
V = base.config.vocab_size
rng = random.Random(11)
pairs = []
for _ in range(PAIRS):
    prompt = [1] + [rng.randrange(3, V) for _ in range(rng.randint(2, 9))]
    chosen = [rng.randrange(3, V) for _ in range(rng.randint(1, 11))] + [2]
    rejected = [rng.randrange(3, V) for _ in range(rng.randint(1, 11))] + [2]
    pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})


def sequence_logps(model, ids, prompt_len):
    """Σ log p(token | prefix) over the tokens after the prompt."""
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0]
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, x[0, 1:, None])[:, 0]
    return logp[prompt_len - 1:].sum()


def all_logps(model):
    return torch.stack([
        torch.stack([sequence_logps(model, p["prompt"] + p[k], len(p["prompt"])) for k in ("chosen", "rejected")])
        for p in pairs])


def parameter_groups(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]


# 1. float64, from the formulas.
policy = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).double()
with torch.no_grad():
    ref = all_logps(policy)
optimizer = torch.optim.AdamW(parameter_groups(policy), lr=LR, betas=(0.9, 0.95), eps=1e-5)
losses = []
for step in range(STEPS):
    optimizer.zero_grad()
    logps = all_logps(policy)
    d = BETA * ((logps[:, 0] - ref[:, 0]) - (logps[:, 1] - ref[:, 1]))
    loss = torch.nn.functional.softplus(-d).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    losses.append(loss.item())
assert abs(losses[0] - math.log(2)) < 1e-12, losses

# 2. TRL's DPOTrainer, float32.
from datasets import Dataset
from transformers import PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer


class TokenIdsDPOTrainer(DPOTrainer):
    """The pairs are token ids already: TRL's collator reads prompt_ids, chosen_ids and rejected_ids."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


# TRL asks its processing class only for the pad token here: a word-level stand-in with Llama's specials.
from tokenizers import Tokenizer, models

tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>")),
    unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>")
dataset = Dataset.from_list(
    [{"prompt_ids": p["prompt"], "chosen_ids": p["chosen"], "rejected_ids": p["rejected"]} for p in pairs])
trl_model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
trl_optimizer = torch.optim.AdamW(parameter_groups(trl_model), lr=LR, betas=(0.9, 0.95), eps=1e-5)
args = DPOConfig(
    output_dir=os.path.join(out, ".trl-run"), beta=BETA, learning_rate=LR, per_device_train_batch_size=PAIRS,
    max_steps=STEPS, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, logging_steps=1,
    report_to=[], save_strategy="no", use_cpu=True, max_length=None, seed=0, dataloader_drop_last=False)
trl_reference = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
trainer = TokenIdsDPOTrainer(
    model=trl_model, ref_model=trl_reference, args=args, train_dataset=dataset, processing_class=tokenizer, optimizers=(trl_optimizer, None))
trainer.train()
trl_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
assert len(trl_losses) == STEPS, trainer.state.log_history

expected = {"ref_logps": ref.float(), "loss": torch.tensor(losses, dtype=torch.float32),
            "trl_loss": torch.tensor(trl_losses, dtype=torch.float32)}
worst = 0.0
trl_params = dict(trl_model.named_parameters())
for name, p in policy.named_parameters():
    expected["step2." + name] = p.detach().float().contiguous()
    expected["trl_step2." + name] = trl_params[name].detach().float().contiguous()
    diff = (trl_params[name].detach().double() - p.detach()).abs().max().item()
    worst = max(worst, diff / max(p.detach().abs().max().item(), 1e-12))
save_file(expected, os.path.join(out, "expected.safetensors"))
shutil.rmtree(os.path.join(out, ".trl-run"), ignore_errors=True)
with open(os.path.join(out, "pairs.json"), "w") as f:
    json.dump({"beta": BETA, "learning_rate": LR, "steps": STEPS, "pairs": pairs}, f, indent=1)
print(f"float64 losses {losses}, TRL's {trl_losses}; TRL's parameters after {STEPS} steps within {worst:.2e} "
      f"(relative to each tensor's largest) of float64's")
