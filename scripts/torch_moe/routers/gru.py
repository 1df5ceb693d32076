import torch
from torch import nn


class GRURouter(nn.Module):
    """Layerwise Recurrent Router (RMoE; Qiu et al. 2024). The recurrence runs over depth for
    each token, never along the sequence:

        x_i = P_i u_i                            (P_i ∈ ℝ^{p×d}, `gate.projector`, no bias)
        h_i = GRUCell(x_i, h_{i−1}),  h_0 = 0    (one cell for all layers, `model.router_gru`,
                                                  PyTorch's GRUCell: gates r, z, n)
        logits_i = G_i h_i                       (G_i ∈ ℝ^{E×p}, `gate.output`, no bias)

    Gradients flow through h across layers.
    """

    def __init__(self, config, cell: nn.GRUCell):
        super().__init__()
        self.projector = nn.Linear(config.hidden_size, config.gru_hidden_size, bias=False)
        self.output = nn.Linear(config.gru_hidden_size, config.num_experts, bias=False)
        object.__setattr__(self, "cell", cell)   # shared, registered once on the model

    def forward(self, u, tokens=None, state=None):
        x = self.projector(u)
        if state is None:
            state = torch.zeros_like(x)
        h = self.cell(x, state)
        return self.output(h), h
