import torch.nn.functional as F
from torch import nn


class MLPHadamardRouter(nn.Module):
    """Harvey, Weale, Yilmaz 2025 — moescope's interpretation: a gated MLP whose hidden layer is
    the elementwise product of two projections.

        logits = Wo (GELU(Wa u) ⊙ (Wb u)),   Wa, Wb ∈ ℝ^{h×d}, Wo ∈ ℝ^{E×h}   (`gate.proj_a/proj_b/out`)
    """

    def __init__(self, config):
        super().__init__()
        self.proj_a = nn.Linear(config.hidden_size, config.router_hidden_size, bias=False)
        self.proj_b = nn.Linear(config.hidden_size, config.router_hidden_size, bias=False)
        self.out = nn.Linear(config.router_hidden_size, config.num_experts, bias=False)

    def forward(self, u, tokens=None, state=None):
        return self.out(F.gelu(self.proj_a(u)) * self.proj_b(u)), state
