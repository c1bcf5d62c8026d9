#!/usr/bin/env python3
"""TRL's PPOTrainer (trl==1.0.0's trl.experimental.ppo, the last release that ships PPO) on the same models,
prompts and lengths as `llama-train ppo` in scripts/bench-ppo.sh, on CPU, one thread: seconds per iteration
and the share of them spent generating.

    python scripts/bench-ppo-trl.py WORK ITERATIONS

WORK holds policy/, reward/ (Hugging Face layout, from this script's `make` mode), prompt-ids.json (the
prompts as our template encodes them) and the settings in bench.json.
"""
import json
import os
import sys
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch

torch.set_num_threads(1)
from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast,
                          TrainerCallback)

work = sys.argv[1]
if sys.argv[2] == "make":
    # Random models of one shape, in HF layout: the policy, and the reward model (also the value model's start).
    s = json.load(open(f"{work}/bench.json"))
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=s["dim"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["kv_heads"], intermediate_size=s["ffn"], vocab_size=s["vocab"],
                         max_position_embeddings=s["context"], rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(f"{work}/policy", safe_serialization=True)
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(f"{work}/reward", safe_serialization=True)
    sys.exit(0)

from datasets import Dataset
import trl.experimental.ppo.ppo_trainer as ppo_module
from trl.experimental.ppo import PPOConfig, PPOTrainer

iterations = int(sys.argv[2])
s = json.load(open(f"{work}/bench.json"))
prompts = json.load(open(f"{work}/prompt-ids.json"))
# The prompts are token ids already; TRL's tokenizer is only asked for its pad and eos ids (and pads left).
from tokenizers import Tokenizer, models

tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>")),
                              pad_token="<unk>", eos_token="</s>", bos_token="<s>")
tok.padding_side = "left"
dataset = Dataset.from_dict({"input_ids": prompts})
policy = LlamaForCausalLM.from_pretrained(f"{work}/policy", torch_dtype=torch.float32)
reference = LlamaForCausalLM.from_pretrained(f"{work}/policy", torch_dtype=torch.float32)
reward = LlamaForSequenceClassification.from_pretrained(f"{work}/reward", torch_dtype=torch.float32)
value = LlamaForSequenceClassification.from_pretrained(f"{work}/reward", torch_dtype=torch.float32)
args = PPOConfig(
    output_dir=f"{work}/trl-out", per_device_train_batch_size=s["batch"], gradient_accumulation_steps=1,
    num_mini_batches=s["batch"] // s["mini_batch"], local_rollout_forward_batch_size=s["batch"],
    total_episodes=s["batch"] * iterations, num_ppo_epochs=1, response_length=s["max_tokens"], temperature=1.0,
    kl_coef=s["kl_coef"], cliprange=0.2, cliprange_value=0.2, gamma=1.0, lam=0.95, learning_rate=s["lr"],
    stop_token="eos", missing_eos_penalty=None, report_to=[], logging_steps=1, save_strategy="no",
    use_cpu=True, bf16=False, fp16=False, seed=1, num_sample_generations=0, dataloader_num_workers=0)
generation = [0.0]
original = ppo_module.batch_generation


def timed(*a, **k):
    start = time.time()
    out = original(*a, **k)
    generation[0] += time.time() - start
    return out


ppo_module.batch_generation = timed
marks = []


class Marks(TrainerCallback):
    def on_train_begin(self, *a, **k):
        marks.append((time.time(), generation[0]))

    def on_step_end(self, *a, **k):
        marks.append((time.time(), generation[0]))


trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=reference, reward_model=reward,
                     value_model=value, train_dataset=dataset, callbacks=[Marks()])
trainer.train()
for i in range(1, len(marks)):
    seconds, gen = marks[i][0] - marks[i - 1][0], marks[i][1] - marks[i - 1][1]
    print(json.dumps({"trl_iteration": i, "seconds": seconds, "generation_seconds": gen}))
