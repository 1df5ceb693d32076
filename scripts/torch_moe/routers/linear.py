from torch import nn


class LinearRouter(nn.Module):
    """Switch Transformer / Mixtral baseline.

        logits = W u,    W ∈ ℝ^{E×d}        (stored as `gate.weight`)
    """

    def __init__(self, config):
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(config.hidden_size, config.num_experts, bias=False).weight.detach())

    def forward(self, u, tokens=None, state=None):
        return u @ self.weight.t(), state
