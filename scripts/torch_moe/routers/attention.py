import math

import torch
from torch import nn


class AttentionRouter(nn.Module):
    """Harvey, Weale, Yilmaz 2025 — moescope's interpretation: a query scored against one
    learned key per expert.

        logits = (Wq u) Kᵀ / √a,    Wq ∈ ℝ^{a×d}, K ∈ ℝ^{E×a}      (`gate.query`, `gate.expert_keys`)
    """

    def __init__(self, config):
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.router_hidden_size, bias=False)
        self.expert_keys = nn.Parameter(torch.randn(config.num_experts, config.router_hidden_size))
        self.scale = 1 / math.sqrt(config.router_hidden_size)

    def forward(self, u, tokens=None, state=None):
        return (self.query(u) @ self.expert_keys.t()) * self.scale, state
