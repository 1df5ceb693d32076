import torch
from torch import nn

from ..rng import MASK, SeededGenerator


def hash_experts(token: int, layer: int, num_experts: int, top_k: int) -> list[int]:
    """The k experts of (token, layer), in draw order: `HashRouter.experts` of moescope."""
    seed = ((token * 0x100000001B3) & MASK) ^ ((layer * 0x9E3779B9) & MASK)
    generator, pool, chosen = SeededGenerator(seed), list(range(num_experts)), []
    for _ in range(top_k):
        chosen.append(pool.pop(generator.next() % len(pool)))
    return chosen


class HashRouter(nn.Module):
    """Roller et al. 2021, Hash Layers. No parameters: token t at layer i goes to a fixed set of
    k experts drawn from hash(t, i), weights 1/k.

        logits = 0 on experts(t, i), −∞ elsewhere   (so softmax / top-k / renormalise give 1/k each)
    """

    def __init__(self, config, layer: int):
        super().__init__()
        table = torch.full((config.vocab_size, config.num_experts), float("-inf"))
        for token in range(config.vocab_size):
            table[token, hash_experts(token, layer, config.num_experts, config.top_k)] = 0
        self.register_buffer("table", table, persistent=False)   # not a checkpoint tensor

    def forward(self, u, tokens=None, state=None):
        return self.table[tokens.reshape(-1)].to(u.dtype), state
