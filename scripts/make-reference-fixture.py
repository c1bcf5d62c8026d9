#!/usr/bin/env python3
"""Regenerate the model reference fixture with Hugging Face transformers, as llm.c ships its PyTorch reference.

    pip install torch transformers safetensors
    python3 scripts/make-reference-fixture.py OUT_DIR [--seed 0] [--layers 2] [--hidden 64] [--kv-heads 2] ...
    REFERENCE_FIXTURE=OUT_DIR swift test --filter Reference

Writes OUT_DIR/config.json and model.safetensors (a random LlamaForCausalLM, float32) and
expected.safetensors, everything computed in float64 and stored as float32, in the layout
../shared/fixtures/README.md describes:
  inputs, targets (int32 [B, T]; the first quarter of row 0 is -100, ignored, as SFT prompt masking does),
  logits [B, T, V], loss (mean cross-entropy over the targets that count), grad.<name> for every parameter,
  grad_norm (before clipping), step1.<name> after one AdamW step (lr 1e-3, betas (0.9, 0.95), eps 1e-5,
  weight decay 0.1 on tensors of two or more dimensions) after clip_grad_norm_(1.0), loss_after_step1,
  step2.<name> after a second step on the same batch.
Nothing in this project's code is used: the fixture must stay an independent reference. Not run by CI
(it needs torch); the committed fixture under shared/ is what the tests read.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=172)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--eps", type=float, default=1e-5)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)

    config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                         num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                         head_dim=a.head_dim, max_position_embeddings=128, rms_norm_eps=a.eps, rope_theta=a.rope_theta,
                         tie_word_embeddings=False, attention_bias=False, mlp_bias=False, hidden_act="silu")
    model = LlamaForCausalLM(config).float()
    with torch.no_grad():  # RMSNorm gains away from 1, so their gradients are exercised
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(a.out, safe_serialization=True)

    model = model.double()
    inputs = torch.randint(0, a.vocab, (a.batch, a.seq))
    targets = torch.randint(0, a.vocab, (a.batch, a.seq))
    targets[0, : a.seq // 4] = -100

    def loss_of(logits):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, a.vocab), targets.reshape(-1), ignore_index=-100)

    out = {"inputs": inputs.int(), "targets": targets.int()}
    logits = model(input_ids=inputs).logits
    loss = loss_of(logits)
    loss.backward()
    out["logits"] = logits.detach()
    out["loss"] = loss.detach().reshape(1)
    names = [n for n, _ in model.named_parameters()]
    for name, param in model.named_parameters():
        out["grad." + name] = param.grad.detach().clone()
    out["grad_norm"] = torch.sqrt(sum((param.grad ** 2).sum() for param in model.parameters())).reshape(1)

    decay = [prm for n, prm in model.named_parameters() if prm.dim() >= 2]
    no_decay = [prm for n, prm in model.named_parameters() if prm.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.95), eps=1e-5)
    for step in (1, 2):
        if step == 2:
            optimizer.zero_grad()
            loss_of(model(input_ids=inputs).logits).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        for name, param in model.named_parameters():
            out[f"step{step}.{name}"] = param.detach().clone()
        if step == 1:
            with torch.no_grad():
                out["loss_after_step1"] = loss_of(model(input_ids=inputs).logits).reshape(1)
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in out.items()},
              os.path.join(a.out, "expected.safetensors"))
    print(json.dumps({"out": a.out, "parameters": len(names), "loss": float(out["loss"]), "grad_norm": float(out["grad_norm"])}))


if __name__ == "__main__":
    main()
