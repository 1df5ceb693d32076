import torch.nn.functional as F
from torch import nn


class MLPRouter(nn.Module):
    """Harvey, Weale, Yilmaz 2025 — moescope's interpretation (the paper publishes no formula).

        logits = W2 GELU(W1 u),    W1 ∈ ℝ^{h×d}, W2 ∈ ℝ^{E×h}      (`gate.fc1`, `gate.fc2`)
    """

    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.router_hidden_size, bias=False)
        self.fc2 = nn.Linear(config.router_hidden_size, config.num_experts, bias=False)

    def forward(self, u, tokens=None, state=None):
        return self.fc2(F.gelu(self.fc1(u))), state   # exact (erf) GELU, as moescope
