"""moescope's MoE transformer in PyTorch (Sources/MoECore/MoEModel.swift, TapeForward.swift):
pre-norm decoder, RMSNorm, RoPE (rotate-half), causal multi-head attention, a dropless top-k MoE
of SwiGLU experts in every layer, LM head tied to the embeddings by default. Module paths are
moescope's tensor names, so `state_dict()` is a moescope checkpoint's tensor set."""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .rng import normal_range
from .routers import make_router


class RMSNorm(nn.Module):
    """y = x / √(mean(x²) + ε) ⊙ g, computed in float32."""

    def __init__(self, size: int, epsilon: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.epsilon = epsilon

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.epsilon) * self.weight


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.hidden_size
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.heads = config.num_heads

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # scale 1/√head_dim
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


def rotate(x, cos, sin):
    """RoPE, rotate-half layout: dimension i pairs with i + D/2."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), -1).to(x.dtype)


class Expert(nn.Module):
    """SwiGLU: y = W2 (SiLU(W1 u) ⊙ W3 u)   (w1 gate, w3 up, w2 down: Mixtral's names)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, h = config.hidden_size, config.expert_hidden_size
        self.w1 = nn.Linear(d, h, bias=False)
        self.w2 = nn.Linear(h, d, bias=False)
        self.w3 = nn.Linear(d, h, bias=False)

    def forward(self, u):
        return self.w2(F.silu(self.w1(u)) * self.w3(u))


@dataclass
class LayerRouting:
    logits: torch.Tensor         # [N × E], float32
    probabilities: torch.Tensor  # softmax(logits), [N × E]
    choices: torch.Tensor        # [N × k] expert ids, most probable first, ties → lower id


def route(logits, k: int):
    """Mixtral routing: p = softmax(logits), the top k (stable: ties go to the lower id, as
    moescope's `topK`), their weights renormalised to sum to 1."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    choices = torch.sort(probabilities, dim=-1, descending=True, stable=True).indices[:, :k]
    chosen = probabilities.gather(1, choices)
    return probabilities, choices, chosen / chosen.sum(-1, keepdim=True)


class SparseMoE(nn.Module):
    """Dropless top-k MoE block: every expert runs once on the rows routed to it. Every expert
    runs even on zero rows, so each has a (zero) gradient, as on moescope's tape: AdamW then
    treats unused experts the same way in both trainers, and DDP needs no unused-parameter scan."""

    def __init__(self, config: ModelConfig, layer: int, gru_cell):
        super().__init__()
        self.gate = make_router(config, layer, gru_cell)
        self.experts = nn.ModuleList(Expert(config) for _ in range(config.num_experts))
        self.top_k = config.top_k

    def forward(self, u, tokens, state):
        logits, state = self.gate(u, tokens, state)
        probabilities, choices, weights = route(logits, self.top_k)
        rows = torch.arange(u.shape[0], device=u.device).repeat_interleave(self.top_k)
        experts, slot_weights = choices.reshape(-1), weights.reshape(-1)
        order = torch.argsort(experts, stable=True)
        counts = torch.bincount(experts, minlength=len(self.experts)).tolist()
        output = torch.zeros(u.shape, dtype=torch.float32, device=u.device)
        start = 0
        for expert, count in zip(self.experts, counts):
            slots = order[start:start + count]
            start += count
            y = expert(u[rows[slots]])
            output = output.index_add(0, rows[slots], y.float() * slot_weights[slots, None])
        return output, state, LayerRouting(logits.float(), probabilities, choices)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, gru_cell):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.norm_epsilon)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.norm_epsilon)
        self.block_sparse_moe = SparseMoE(config, layer, gru_cell)


class Backbone(nn.Module):
    """Everything under the `model.` prefix."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        # The RMoE cell shared by every layer's GRU router (`model.router_gru.*`).
        self.router_gru = nn.GRUCell(config.gru_hidden_size, config.gru_hidden_size) if config.router == "gru" else None
        self.layers = nn.ModuleList(DecoderLayer(config, i, self.router_gru) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_epsilon)


class MoEModel(nn.Module):
    """Initialised as `moescope train --seed` initialises it (`reset_parameters`)."""

    def __init__(self, config: ModelConfig, seed: int = 1):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        half = config.head_dim // 2
        frequencies = config.rope_theta ** (-2 * torch.arange(half, dtype=torch.float64) / config.head_dim)
        angles = torch.arange(config.context_length, dtype=torch.float64)[:, None] * frequencies
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)
        self.reset_parameters(seed)

    def forward(self, tokens):
        """tokens [B × T] → next-token logits [B × T × V] (float32) and each layer's routing."""
        b, t = tokens.shape
        if t > self.config.context_length:
            raise ValueError(f"{t} tokens exceed the model's context of {self.config.context_length}")
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.model.embed_tokens(tokens).float()
        flat_tokens = tokens.reshape(-1)
        state, routing = None, []
        for layer in self.model.layers:
            x = x + layer.self_attn(layer.input_layernorm(x), cos, sin).float()
            u = layer.post_attention_layernorm(x).reshape(b * t, -1)
            out, state, layer_routing = layer.block_sparse_moe(u, flat_tokens, state)
            routing.append(layer_routing)
            x = x + out.view(b, t, -1)
        head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return (self.model.norm(x) @ head.t()).float(), routing

    # Initialisation -----------------------------------------------------------------------

    def init_order(self):
        """(name, std) of every parameter moescope draws from its generator, in the order
        `MoEModel(config:seed:)` draws them; std is a float32 as Swift computes it. The rest
        (norm gains, Hybrid's mix logits) are constants."""
        c, f32 = self.config, np.float32
        std, deep = f32(c.init_std), f32(c.init_std) / np.sqrt(f32(2 * c.num_layers))
        order = [("model.embed_tokens.weight", std)]
        for i in range(c.num_layers):
            p = f"model.layers.{i}"
            order += [(f"{p}.self_attn.{n}_proj.weight", std) for n in "qkv"] + [(f"{p}.self_attn.o_proj.weight", deep)]
            for e in range(c.num_experts):
                x = f"{p}.block_sparse_moe.experts.{e}"
                order += [(f"{x}.w1.weight", std), (f"{x}.w2.weight", deep), (f"{x}.w3.weight", std)]
        if not c.tie_embeddings:
            order.append(("lm_head.weight", std))
        gate = [f"model.layers.{i}.block_sparse_moe.gate" for i in range(c.num_layers)]
        if c.router == "linear":
            order += [(f"{g}.weight", std) for g in gate]
        elif c.router == "mlp":
            order += [(f"{g}.{n}.weight", std) for g in gate for n in ("fc1", "fc2")]
        elif c.router == "attention":
            order += [x for g in gate for x in ((f"{g}.query.weight", std), (f"{g}.expert_keys", f32(1)))]
        elif c.router == "hybrid":
            order += [(f"{g}.linear.weight", std) for g in gate]
            order += [(f"{g}.mlp.{n}.weight", std) for g in gate for n in ("fc1", "fc2")]
        elif c.router == "mlp-hadamard":
            order += [(f"{g}.{n}.weight", std) for g in gate for n in ("proj_a", "proj_b", "out")]
        elif c.router == "gru":
            cell = f32(1) / np.sqrt(f32(3 * c.gru_hidden_size))
            order += [(f"model.router_gru.{n}", cell) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            order += [(f"{g}.{n}.weight", std) for g in gate for n in ("projector", "output")]
        return order

    @torch.no_grad()
    def reset_parameters(self, seed: int):
        """moescope's initialisation for `seed`: the same weights `moescope train --seed` starts
        from (normal draws from its generator; norms 1; Hybrid's mix logit 0)."""
        params = dict(self.named_parameters())
        order = self.init_order()
        offset, chunk = 0, 1 << 22   # drawn a few million at a time, so big models stay in memory
        for name, std in order:
            flat = params[name].view(-1)
            for begin in range(0, flat.numel(), chunk):
                count = min(chunk, flat.numel() - begin)
                flat[begin:begin + count] = torch.from_numpy(normal_range(seed, offset + begin, count) * std)
            offset += flat.numel()
        drawn = {name for name, _ in order}
        for name, p in params.items():
            if name not in drawn:
                p.fill_(0 if name.endswith("mix_logit") else 1)   # norm gains


def load_balance_loss(probabilities, choices, num_experts: int):
    """Switch/HF form: E · Σ_e f_e P_e; f_e = share of rows that chose e among their k (Σ f = k,
    no gradient), P_e = mean router probability of e. Equals k at uniform routing."""
    counts = torch.zeros(num_experts, device=choices.device).index_add_(
        0, choices.reshape(-1), torch.ones(choices.numel(), device=choices.device))
    return num_experts * (counts / probabilities.shape[0] * probabilities.mean(0)).sum()


def z_loss(logits):
    """ST-MoE router z-loss: mean over rows of logsumexp(logits)²."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


@dataclass
class Losses:
    objective: torch.Tensor   # what is differentiated
    cross_entropy: float
    balance: float            # mean over layers (or the pooled value)
    z: float


def objective(logits, targets, routing, config: ModelConfig, sequences: int, groups: int,
              balance_coefficient: float, z_coefficient: float, pooled: bool) -> Losses:
    """LM cross-entropy + balance (+ z) losses of a batch of `sequences` sequences, with the
    auxiliary losses taken per group of whole sequences and weighted by the group's share of
    tokens (moescope's batch shards; Switch Transformer's per-device loss)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    total = ce
    balance_value = z_value = torch.zeros((), device=logits.device)   # read once, not per layer (a GPU sync each)
    if config.router != "hash":   # nothing to learn: the auxiliary losses would be constants
        rows = logits.shape[0] * logits.shape[1]
        per_sequence = rows // sequences
        groups = max(1, min(groups, sequences))
        bounds = [g * sequences // groups * per_sequence for g in range(groups + 1)]
        layers = len(routing)
        for lo, hi in zip(bounds, bounds[1:]):
            share = (hi - lo) / rows
            if pooled:
                b = load_balance_loss(torch.cat([r.probabilities[lo:hi] for r in routing]),
                                      torch.cat([r.choices[lo:hi] for r in routing]), config.num_experts)
                total = total + balance_coefficient * share * b
                balance_value = balance_value + share * b.detach()
            for r in routing:
                if not pooled:
                    b = load_balance_loss(r.probabilities[lo:hi], r.choices[lo:hi], config.num_experts)
                    total = total + balance_coefficient / layers * share * b
                    balance_value = balance_value + share * b.detach() / layers
                if z_coefficient > 0:
                    z = z_loss(r.logits[lo:hi])
                    total = total + z_coefficient / layers * share * z
                    z_value = z_value + share * z.detach() / layers
    return Losses(total, ce.item(), balance_value.item(), z_value.item())
