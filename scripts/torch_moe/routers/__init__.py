"""The seven routers, one file each, as in Sources/MoECore/Routers. Each maps u [N × d] (the
normed hidden state entering layer i's MoE block) to logits [N × E]; the MoE block routes the
Mixtral way for all of them. `state` carries what a router passes down the stack (the GRU's h)."""

from .attention import AttentionRouter
from .gru import GRURouter
from .hash import HashRouter
from .hybrid import HybridRouter
from .linear import LinearRouter
from .mlp import MLPRouter
from .mlp_hadamard import MLPHadamardRouter


def make_router(config, layer: int, gru_cell=None):
    """Layer `layer`'s router module (its parameters are `…block_sparse_moe.gate.*`)."""
    kind = config.router
    if kind == "linear":
        return LinearRouter(config)
    if kind == "mlp":
        return MLPRouter(config)
    if kind == "attention":
        return AttentionRouter(config)
    if kind == "hybrid":
        return HybridRouter(config)
    if kind == "hash":
        return HashRouter(config, layer)
    if kind == "mlp-hadamard":
        return MLPHadamardRouter(config)
    if kind == "gru":
        return GRURouter(config, gru_cell)
    raise ValueError(f"unknown router {kind!r}")
