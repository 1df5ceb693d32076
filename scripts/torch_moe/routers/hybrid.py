import torch
from torch import nn

from .mlp import MLPRouter


class _Linear(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))


class HybridRouter(nn.Module):
    """Harvey, Weale, Yilmaz 2025 — moescope's interpretation: a learned blend of Linear and MLP.

        logits = α · W u + (1 − α) · W2 GELU(W1 u),   α = σ(s)    (`gate.linear`, `gate.mlp`, `gate.mix_logit`)
    """

    def __init__(self, config):
        super().__init__()
        self.linear = _Linear(config)
        self.mlp = MLPRouter(config)
        self.mix_logit = nn.Parameter(torch.zeros(1))   # α = 0.5 at the start

    def forward(self, u, tokens=None, state=None):
        alpha = torch.sigmoid(self.mix_logit)
        mlp, _ = self.mlp(u)
        return alpha * (u @ self.linear.weight.t()) + (1 - alpha) * mlp, state
