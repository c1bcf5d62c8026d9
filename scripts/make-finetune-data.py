#!/usr/bin/env python3
"""Tiny fine-tuning sets for the demo and the tests, generated from a seed (nothing downloaded):
  sft.jsonl          {"prompt", "response"}: echo and list tasks a small model can pick up
  prefs.jsonl        {"prompt", "chosen", "rejected", "rating"}: the chosen reply is kind, the rejected rude;
  prefs-eval.jsonl   a held-out split of the same task (disjoint subjects)
  chat.jsonl         {"messages": [...]}: multi-turn dialogues with a system message, for the llama2-chat template
usage: make-finetune-data.py OUT_DIR [N_SFT] [N_PAIRS]"""
import json
import random
import sys

out, n_sft, n_pairs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 400, int(sys.argv[3]) if len(sys.argv) > 3 else 400
rng = random.Random(7)
words = ["apple", "river", "mountain", "garden", "book", "music", "friend", "ocean", "city", "forest", "window", "letter",
         "bread", "summer", "winter", "school", "train", "candle", "bridge", "island", "teacher", "doctor", "cat", "dog"]
kind = ["wonderful", "kind", "lovely", "thoughtful", "great", "generous", "brilliant", "gentle"]
rude = ["terrible", "stupid", "awful", "useless", "boring", "horrible", "nasty", "dreadful"]
ratings = ["significantly better", "better", "slightly better", "negligibly better"]

with open(f"{out}/sft.jsonl", "w") as f:
    for _ in range(n_sft):
        a, b = rng.sample(words, 2)
        task = rng.randrange(3)
        if task == 0:
            prompt, response = f"Repeat the word {a} three times.", f"{a} {a} {a}"
        elif task == 1:
            prompt, response = f"Name two things: {a} and what else?", f"{a} and {b}."
        else:
            prompt, response = f"What is the opposite of winter?", "The opposite of winter is summer."
        f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")

def pairs(subjects, n, path):
    with open(path, "w") as f:
        for _ in range(n):
            s = rng.choice(subjects)
            k = rng.randrange(4)
            # More decisive ratings get more clearly different replies.
            good = " ".join(rng.sample(kind, 4 - k if k < 3 else 1))
            bad = " ".join(rng.sample(rude, 4 - k if k < 3 else 1))
            f.write(json.dumps({"prompt": f"Tell me about the {s}.", "chosen": f"The {s} is {good}.",
                                "rejected": f"The {s} is {bad}.", "rating": ratings[k]}) + "\n")

pairs(words[:16], n_pairs, f"{out}/prefs.jsonl")
pairs(words[16:], max(n_pairs // 4, 40), f"{out}/prefs-eval.jsonl")
with open(f"{out}/chat.jsonl", "w") as f:
    for _ in range(n_sft):
        a, b = rng.sample(words, 2)
        messages = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}]
        messages += [{"role": "user", "content": f"Repeat the word {a}."}, {"role": "assistant", "content": f"{a} {a}"}]
        if rng.random() < 0.7:  # a second exchange that refers to the first
            messages += [{"role": "user", "content": f"Now name {a} and one more thing."}, {"role": "assistant", "content": f"{a} and {b}."}]
        f.write(json.dumps({"messages": messages}) + "\n")

print(f"wrote {out}/sft.jsonl, {out}/chat.jsonl, {out}/prefs.jsonl, {out}/prefs-eval.jsonl")
