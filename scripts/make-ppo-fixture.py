#!/usr/bin/env python3
"""Regenerate the PPO fixture (Tests/FineTuneTests/Fixtures/ppo): two PPO iterations on fixed rollouts, in
float64 with PyTorch, written from the formulas of the RLHF issue (Llama 2, section 3.2.3), not from our code.

Models, all of llama-tiny's shape:
  policy     the shared llama-tiny LlamaForCausalLM (trainable);
  reference  the policy as it starts (frozen);
  reward     llama-tiny's trunk, perturbed, with a score head (1, dim), saved in Hugging Face layout
             (LlamaForSequenceClassification, one label) to OUT_DIR/reward (frozen): r = score · h_last;
  value      initialised from the reward model (its trunk; v_head = its score row), a scalar per token
             (trainable): V_t = v_head · h at the position that predicts response token y_t.

Each iteration, on its rollouts (prompt and response ids, fixed, in OUT_DIR/rollouts.json):
  log π(y_t)  = log_softmax(logits / T)[y_t], for the policy before the iteration (old) and the reference;
  R̃          = whiten(raw scores over the batch), whiten(x) = (x − mean) / sqrt(unbiased var + 1e-8);
  r_t         = −β (log π_old(y_t) − log π_ref(y_t)), plus R̃ on the last token;
  δ_t         = r_t + γ V_{t+1} − V_t (V = 0 after the last token), A_t = δ_t + γλ A_{t+1}; returns = A + V;
  A           whitened over the batch's response tokens;
  then mini-batches in file order, one AdamW step each for each model (own lr, own clipping at 1.0, weight
  decay 0.1 on matrices only):
  policy loss = mean over tokens of max(−A ρ, −A clip(ρ, 1 − ε, 1 + ε)), ρ = exp(log π_θ − log π_old);
  value loss  = ½ mean over tokens of max((V − R)², (clip(V, V_old ± c) − R)²).

    .build/fixture-venv/bin/python scripts/make-ppo-fixture.py [MODEL_DIR] [OUT_DIR]

Writes OUT_DIR/reward/{config.json, model.safetensors}, OUT_DIR/rollouts.json (the rollouts per iteration and
the settings) and OUT_DIR/expected.safetensors (float64 results stored as float32): per iteration n,
itN.{old_logprobs, ref_logprobs, values, rewards, advantages, returns} over the batch's response tokens in
rollout order, itN.{scores, whitened_scores} per rollout, itN.{policy_loss, value_loss} per mini-batch; after
the last iteration policy.<name> and value.<name> for every parameter. Not run by CI.
"""
import copy
import json
import os
import random
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

model_dir = sys.argv[1] if len(sys.argv) > 1 else "../shared/fixtures/llama-tiny"
out = sys.argv[2] if len(sys.argv) > 2 else "Tests/FineTuneTests/Fixtures/ppo"
S = dict(temperature=0.8, kl_coef=0.05, clip=0.2, value_clip=0.2, gamma=1.0, lam=0.95, lr=1e-3, value_lr=2e-3,
         weight_decay=0.1, grad_clip=1.0, iterations=2, rollouts=4, mini_batch=2)
os.makedirs(out + "/reward", exist_ok=True)
torch.manual_seed(7)
rng = random.Random(7)

policy = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
V = policy.config.vocab_size

# The reward model: the trunk perturbed (so that it is not the policy's), a random score row; saved in float32
# and read back, so that both sides start from the same numbers.
config = LlamaConfig.from_pretrained(model_dir)
config.num_labels, config.pad_token_id = 1, 0
reward = LlamaForSequenceClassification(config)
trunk = {k[len("model."):]: v for k, v in policy.state_dict().items() if k.startswith("model.")}
reward.model.load_state_dict(trunk)
with torch.no_grad():
    for p in reward.model.parameters():
        p.add_(0.02 * torch.randn_like(p))
    reward.score.weight.copy_(torch.randn_like(reward.score.weight) / 8)
reward.save_pretrained(out + "/reward", safe_serialization=True)
reward = LlamaForSequenceClassification.from_pretrained(out + "/reward", torch_dtype=torch.float32).double().eval()

policy = policy.double()
reference = copy.deepcopy(policy).eval()
value_trunk = copy.deepcopy(reward.model)
value_head = torch.nn.Linear(config.hidden_size, 1, bias=False).double()
with torch.no_grad():
    value_head.weight.copy_(reward.score.weight)

rollouts = []
for _ in range(S["iterations"]):
    batch = []
    for _ in range(S["rollouts"]):
        prompt = [1] + [rng.randrange(3, V) for _ in range(rng.randint(2, 9))]
        response = [rng.randrange(3, V) for _ in range(rng.randint(1, 8))]
        if rng.random() < 0.5:
            response.append(2)
        batch.append({"prompt": prompt, "response": response})
    rollouts.append(batch)


def logprobs(model, r):
    x = torch.tensor([r["prompt"] + r["response"]])
    logits = model(input_ids=x).logits[0] / S["temperature"]
    lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, x[0, 1:, None])[:, 0]
    return lp[len(r["prompt"]) - 1:]


def values(r):
    x = torch.tensor([r["prompt"] + r["response"]])
    h = value_trunk(input_ids=x).last_hidden_state[0]
    return value_head(h)[:, 0][len(r["prompt"]) - 1:-1]


def score(r):
    x = torch.tensor([r["prompt"] + r["response"]])
    return reward.score(reward.model(input_ids=x).last_hidden_state[0, -1])[0]


def whiten(x):
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=True) + 1e-8)


def groups(params):
    params = list(params)
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": S["weight_decay"]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


policy_opt = torch.optim.AdamW(groups(policy.parameters()), lr=S["lr"], betas=(0.9, 0.95), eps=1e-5)
value_params = list(value_trunk.parameters()) + list(value_head.parameters())
value_opt = torch.optim.AdamW(groups(value_params), lr=S["value_lr"], betas=(0.9, 0.95), eps=1e-5)
expected = {}
for it, batch in enumerate(rollouts, start=1):
    with torch.no_grad():
        old = [logprobs(policy, r) for r in batch]
        ref = [logprobs(reference, r) for r in batch]
        vold = [values(r) for r in batch]
        raw = torch.stack([score(r) for r in batch])
    white = whiten(raw)
    rewards, advantages, returns = [], [], []
    for i in range(len(batch)):
        rw = -S["kl_coef"] * (old[i] - ref[i])
        rw[-1] += white[i]
        adv = torch.zeros_like(rw)
        last = 0.0
        for t in reversed(range(len(rw))):
            next_value = vold[i][t + 1] if t + 1 < len(rw) else 0.0
            delta = rw[t] + S["gamma"] * next_value - vold[i][t]
            last = delta + S["gamma"] * S["lam"] * last
            adv[t] = last
        rewards.append(rw)
        advantages.append(adv)
        returns.append(adv + vold[i])
    flat = whiten(torch.cat(advantages))
    lengths = [len(a) for a in advantages]
    advantages = list(torch.split(flat, lengths))
    policy_losses, value_losses = [], []
    for start in range(0, len(batch), S["mini_batch"]):
        members = range(start, start + S["mini_batch"])
        new = torch.cat([logprobs(policy, batch[i]) for i in members])
        a = torch.cat([advantages[i] for i in members])
        ratio = torch.exp(new - torch.cat([old[i] for i in members]))
        policy_loss = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - S["clip"], 1 + S["clip"])).mean()
        v = torch.cat([values(batch[i]) for i in members])
        v_old = torch.cat([vold[i] for i in members])
        ret = torch.cat([returns[i] for i in members])
        clipped = v_old + torch.clamp(v - v_old, -S["value_clip"], S["value_clip"])
        value_loss = 0.5 * torch.max((v - ret) ** 2, (clipped - ret) ** 2).mean()
        policy_opt.zero_grad()
        policy_loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), S["grad_clip"])
        policy_opt.step()
        value_opt.zero_grad()
        value_loss.backward()
        torch.nn.utils.clip_grad_norm_(value_params, S["grad_clip"])
        value_opt.step()
        policy_losses.append(policy_loss.detach())
        value_losses.append(value_loss.detach())
    for name, parts in [("old_logprobs", old), ("ref_logprobs", ref), ("values", vold), ("rewards", rewards),
                        ("advantages", advantages), ("returns", returns)]:
        expected[f"it{it}.{name}"] = torch.cat(parts).detach()
    expected[f"it{it}.scores"] = raw
    expected[f"it{it}.whitened_scores"] = white
    expected[f"it{it}.policy_loss"] = torch.stack(policy_losses)
    expected[f"it{it}.value_loss"] = torch.stack(value_losses)
    print(f"iteration {it}: scores {raw.tolist()}, KL per sequence {[float((o - r).sum()) for o, r in zip(old, ref)]}, "
          f"policy losses {[float(x) for x in policy_losses]}, value losses {[float(x) for x in value_losses]}")
for name, p in policy.named_parameters():
    expected[f"policy.{name}"] = p.detach()
for name, p in value_trunk.named_parameters():
    expected[f"value.model.{name}"] = p.detach()
expected["value.v_head.summary.weight"] = value_head.weight.detach()
save_file({k: v.float().contiguous() for k, v in expected.items()}, out + "/expected.safetensors")
json.dump({"settings": S, "iterations": rollouts}, open(out + "/rollouts.json", "w"), indent=1)
print(f"wrote {out}: {len(expected)} tensors")
