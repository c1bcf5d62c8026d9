"""PyTorch's speed on one of our bench configs, for the side-by-side in scripts/bench-pytorch.sh: a Llama
(RMSNorm, rotary, GQA attention through scaled_dot_product_attention, SwiGLU, untied head) written from the
same config, full training steps (forward, backward, clip to 1.0, AdamW) on random tokens, eager, one
thread, float32 or torch.autocast("cpu", dtype=torch.bfloat16). Prints one JSON line."""
import json, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

config_path, precision, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
torch.set_num_threads(threads)
cfg = json.load(open(config_path))
m, t = cfg["model"], cfg["train"]
dim, layers, heads = m["dim"], m["n_layers"], m["n_heads"]
kv_heads, vocab, ffn = m.get("n_kv_heads", heads), m["vocab_size"], m["ffn_hidden_size"]
head_dim, eps, theta = dim // heads, m.get("norm_eps", 1e-5), m.get("rope_theta", 10000.0)
B, T = t["micro_batch"], t["seq_len"]

class RMSNorm(nn.Module):
    def __init__(self):
        super().__init__(); self.weight = nn.Parameter(torch.ones(dim))
    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * self.weight

inv = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
freqs = torch.outer(torch.arange(T).float(), inv)
cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
def rope(x):
    x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n2 = RMSNorm(), RMSNorm()
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, dim, bias=False)
        self.gate = nn.Linear(dim, ffn, bias=False); self.up = nn.Linear(dim, ffn, bias=False); self.down = nn.Linear(ffn, dim, bias=False)
    def forward(self, x):
        h = self.n1(x)
        q = rope(self.q(h).view(B, T, heads, head_dim).transpose(1, 2))
        k = rope(self.k(h).view(B, T, kv_heads, head_dim).transpose(1, 2))
        v = self.v(h).view(B, T, kv_heads, head_dim).transpose(1, 2)
        if kv_heads != heads:
            k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, dim)
        x = x + self.o(a)
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))

class Llama(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim); self.blocks = nn.ModuleList(Block() for _ in range(layers))
        self.norm = RMSNorm(); self.head = nn.Linear(dim, vocab, bias=False)
    def forward(self, tokens, targets):
        x = self.embed(tokens)
        for b in self.blocks: x = b(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, vocab), targets.view(-1))

torch.manual_seed(1337)
model = Llama()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
tokens = torch.randint(0, vocab, (B, T)); targets = torch.randint(0, vocab, (B, T))
times = []
for step in range(steps + 2):
    t0 = time.time()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(tokens, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step >= 2: times.append(time.time() - t0)
times.sort()
median = times[len(times) // 2]
print(json.dumps({"torch": torch.__version__, "precision": precision, "threads": threads, "tokens_per_s": B * T / median, "loss": loss.item()}))
