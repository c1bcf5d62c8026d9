"""transformers' generate on a random LlamaForCausalLM of one of our configs' shapes, for the side-by-side in
scripts/bench-decode.sh: greedy, KV-cached (the default), fp32, eager, the same prompt length and new tokens
as `llama-train bench --decode`, at each batch size; tokens/s over all sequences, the median of the repeats
(prefill excluded: the time of a 1-token generate is subtracted). Prints one JSON line."""
import json, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM

config_path, threads, prompt, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
batches = [int(b) for b in sys.argv[5].split(",")]
repeats = int(sys.argv[6]) if len(sys.argv) > 6 else 3
torch.set_num_threads(threads)
m = json.load(open(config_path))["model"]
config = LlamaConfig(hidden_size=m["dim"], num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
                     num_key_value_heads=m.get("n_kv_heads", m["n_heads"]), vocab_size=m["vocab_size"],
                     intermediate_size=m["ffn_hidden_size"], rms_norm_eps=m.get("norm_eps", 1e-5),
                     rope_theta=m.get("rope_theta", 10000.0), max_position_embeddings=m["max_seq_len"],
                     tie_word_embeddings=False)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()
model.generation_config.eos_token_id = None
model.generation_config.pad_token_id = 0
out = {"threads": threads, "prompt_tokens": prompt, "new_tokens": new, "decode_tokens_per_s": {}}
for b in batches:
    ids = torch.randint(3, m["vocab_size"], (b, prompt))
    def timed(n):
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                           min_new_tokens=n)
        return time.perf_counter() - t0
    timed(2)  # warm-up
    rates = sorted(b * (new - 1) / (timed(new) - timed(1)) for _ in range(repeats))
    out["decode_tokens_per_s"][str(b)] = rates[len(rates) // 2]
print(json.dumps(out))
