#!/usr/bin/env python3
"""The moescope default model in PyTorch eager (CPU), timed the way `moescope bench` times
moescope, then both side by side in one run.

    python3 -m venv .venv && .venv/bin/pip install torch
    swift build -c release && .venv/bin/python scripts/compare_pytorch.py

Not part of the tests. Same shape as moescope's default config: d=128, 6 layers, 4 heads,
8 SwiGLU experts (hidden 256) top-2, vocab 1024, context 256, tied head, linear router.
"""
import json, os, statistics, subprocess, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

D, L, H, E, K, FF, V, CTX = 128, 6, 4, 8, 2, 256, 1024, 256


class Rope:
    def __init__(self, head_dim, ctx, theta=10000.0):
        inv = theta ** (-torch.arange(0, head_dim // 2, dtype=torch.float32) * 2 / head_dim)
        angles = torch.arange(ctx, dtype=torch.float32)[:, None] * inv[None, :]
        self.cos, self.sin = angles.cos(), angles.sin()

    def __call__(self, x, start):  # x: [B, H, T, hd]
        t, half = x.shape[2], x.shape[3] // 2
        c, s = self.cos[start:start + t], self.sin[start:start + t]
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(D, eps=1e-5), nn.RMSNorm(D, eps=1e-5)
        self.qkv = nn.ModuleList(nn.Linear(D, D, bias=False) for _ in range(3))
        self.o = nn.Linear(D, D, bias=False)
        self.gate = nn.Linear(D, E, bias=False)
        self.w1 = nn.ModuleList(nn.Linear(D, FF, bias=False) for _ in range(E))
        self.w3 = nn.ModuleList(nn.Linear(D, FF, bias=False) for _ in range(E))
        self.w2 = nn.ModuleList(nn.Linear(FF, D, bias=False) for _ in range(E))

    def forward(self, x, rope, cache=None, start=0):
        b, t, _ = x.shape
        h = self.n1(x)
        q, k, v = (m(h).view(b, t, H, D // H).transpose(1, 2) for m in self.qkv)
        q, k = rope(q, start), rope(k, start)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        att = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None or t > 1)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, D))
        u = self.n2(x).reshape(b * t, D)
        probs = self.gate(u).softmax(-1)
        w, idx = probs.topk(K, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(u)
        for e in range(E):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel():
                y = self.w2[e](F.silu(self.w1[e](u[rows])) * self.w3[e](u[rows]))
                out.index_add_(0, rows, y * w[rows, slot, None])
        return x + out.view(b, t, D), probs, idx


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.norm = nn.RMSNorm(D, eps=1e-5)
        self.rope = Rope(D // H, CTX)

    def forward(self, ids, caches=None, start=0):
        x = self.emb(ids)
        aux = []
        for i, blk in enumerate(self.blocks):
            x, probs, idx = blk(x, self.rope, None if caches is None else caches[i], start)
            aux.append((probs, idx))
        return self.norm(x) @ self.emb.weight.T, aux


def decode_ms(model, tokens, repeats):
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            caches = [dict() for _ in range(L)]
            began = time.perf_counter()
            for pos, tok in enumerate(tokens):
                model(torch.tensor([[tok]]), caches, pos)
            times.append((time.perf_counter() - began) / len(tokens) * 1e3)
    return statistics.median(times)


def train_tokens_per_s(model, repeats, threads):
    torch.set_num_threads(threads)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(repeats + 1):
        ids = torch.randint(0, V, (16, 129))
        began = time.perf_counter()
        logits, aux = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
        for probs, idx in aux:   # Switch/HF load-balance loss, as moescope trains
            f = F.one_hot(idx, E).float().sum(1).mean(0)
            loss = loss + 0.01 / L * E * (f * probs.mean(0)).sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step:
            times.append(time.perf_counter() - began)
    return 16 * 128 / statistics.median(times)


def main():
    repeats = 5
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Model()
    tokens = torch.randint(0, V, (128,)).tolist()
    torch_decode = decode_ms(model, tokens, repeats)
    torch_train1 = train_tokens_per_s(model, repeats, 1)
    torch_train2 = train_tokens_per_s(model, repeats, 2)
    # One bench run measures moescope's training on one core and on two.
    env = dict(os.environ, MOESCOPE_THREADS="2")
    out = subprocess.run([".build/release/moescope", "bench", "--json", "--repeats", str(repeats)],
                         check=True, capture_output=True, text=True, env=env).stdout
    ours = {r["name"]: r["value"] for r in json.loads(out)["results"]}
    decode_ours = ours["decode ms/token (linear, traces on)"]
    print(f"PyTorch {torch.__version__} eager, CPU; moescope bench, release; same shape (d={D}, {L} layers, {E} experts top-{K})\n")
    print("| measurement | PyTorch | moescope | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| decode ms/token, 1 thread (linear router) | {torch_decode:.2f} | {decode_ours:.2f} (traces on) | {torch_decode / decode_ours:.1f}x faster |")
    for threads, theirs in [(1, torch_train1), (2, torch_train2)]:
        label = f"{threads} thread{'s' if threads > 1 else ''}"
        mine = ours[f"training tokens/s (linear, {label})"]
        print(f"| training tokens/s, {label} (linear router) | {theirs:.0f} | {mine:.0f} | {mine / theirs:.2f}x |")

if __name__ == "__main__":
    sys.exit(main())
