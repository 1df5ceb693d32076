"""Writes the PyTorch parity fixtures the Swift suite checks (Tests/Fixtures/torch_moe):

    <router>-random/   config.json, tokenizer.json, reference.safetensors: the model moescope
                       initialises from `seed` (metadata), no weights stored — so the fixture also
                       holds moescope's initialisation to PyTorch's replica of it
    <router>-trained/  a moescope checkpoint (F16 weights) after a few AdamW steps, + reference
    gradients/<router>.safetensors: one training step's losses and gradients at the trained
                       weights (per-layer balance loss over moescope's 2 batch shards, z-loss on)
    tokenizer.json:    the shipped tokenizer's ids for a text with every character class

reference.safetensors: input_ids, logits [T × V], and per layer l probabilities.l [T × E] and
top_k.l [T × k] (most probable first, ties → lower id). Run from the repository root:

    PYTHONPATH=scripts /work/venv/bin/python -m torch_moe.make_fixtures
"""

import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

from .checkpoint import save_checkpoint
from .config import ModelConfig
from .data import token_stream
from .model import MoEModel, objective
from .tokenizer import Tokenizer

OUT = "Tests/Fixtures/torch_moe"
TEXT = "Routers send a token.\n\tx = f(y)  # 42"
TOKENIZER_TEXT = ("The router\u00a0sends 12345 tokens\u2003to\u0085experts — ß, é, ñ, Ⓐ, ä\u0308, 日本語, 🙂!\r\n"
                  "  def f(x):\n\t\treturn x**2   # ok\n\n1.5e-3 pci 8086:1234 1000000 2010 10000  Größe")
GRADIENT_OPTIONS = dict(balance_coefficient=0.01, z_coefficient=0.001, groups=2)

# Shapes vary by router so the tests do not pass only at one expert count or depth.
SHAPES = {
    "linear": dict(num_experts=4, top_k=2),
    "mlp": dict(num_experts=6, top_k=3),
    "attention": dict(num_experts=5, top_k=1, tie_embeddings=False),
    "hybrid": dict(num_experts=4, top_k=2),
    "hash": dict(num_experts=6, top_k=2),
    "mlp-hadamard": dict(num_experts=8, top_k=2, num_layers=2),
    "gru": dict(num_experts=4, top_k=2, num_layers=4),
}


def fixture_config(router: str) -> ModelConfig:
    base = dict(vocab_size=272, hidden_size=16, num_layers=3, num_heads=2, expert_hidden_size=16, context_length=64,
                router_hidden_size=12, gru_hidden_size=10, router=router,
                init_std=0.2)   # wide enough that routers are decisive: few near-ties to skip
    base.update(SHAPES[router])
    return ModelConfig(**base).validate()


def small_tokenizer(path: str, vocab_size: int) -> Tokenizer:
    """The shipped tokenizer cut to its first merges, so ids fit a 272-token vocabulary."""
    full = Tokenizer.load("assets/tokenizer.json")
    merges = full.merges[:vocab_size - 256 - len(full.special_tokens)]
    with open(path, "w") as f:
        json.dump({"format": "moescope-byte-bpe", "merges": [list(m) for m in merges],
                   "special_tokens": full.special_tokens, "version": 1}, f, separators=(",", ":"), sort_keys=True)
    return Tokenizer(merges, full.special_tokens)


def reference(model: MoEModel, ids: list[int], text: str, seed) -> tuple[dict, dict]:
    with torch.no_grad():
        logits, routing = model(torch.tensor([ids]))
    tensors = {"input_ids": torch.tensor(ids, dtype=torch.float32), "logits": logits[0]}
    for l, r in enumerate(routing):
        tensors[f"probabilities.{l}"] = r.probabilities
        tensors[f"top_k.{l}"] = r.choices.float()
    metadata = {"text": text, "format": "torch_moe-parity", "torch": torch.__version__}
    if seed is not None:
        metadata["seed"] = str(seed)
    return tensors, metadata


def near_ties(routing, k: int, threshold: float = 1e-4) -> int:
    """Tokens whose k-th and (k+1)-th probabilities are within `threshold` at some layer."""
    tied = torch.zeros(routing[0].probabilities.shape[0], dtype=torch.bool)
    for r in routing:
        if r.probabilities.shape[1] > k:
            top = torch.sort(r.probabilities, dim=-1, descending=True).values
            tied |= (top[:, k - 1] - top[:, k]) < threshold
    return int(tied.sum())


def train_briefly(model: MoEModel, stream: np.ndarray, steps: int = 40, batch: int = 4, length: int = 32):
    """A few AdamW steps on the corpus (ids clipped to the small vocabulary), so routers are
    peaked and experts differ: what a trained checkpoint looks like, at fixture size."""
    optimizer = torch.optim.AdamW([p for p in model.parameters()], lr=2e-2, betas=(0.9, 0.95), weight_decay=0.1)
    generator = np.random.default_rng(0)
    for _ in range(steps):
        starts = generator.integers(0, len(stream) - length - 1, batch)
        windows = torch.from_numpy(np.stack([stream[s:s + length + 1] for s in starts]))
        logits, routing = model(windows[:, :-1])
        loss = objective(logits, windows[:, 1:], routing, model.config, batch, 2, 0.01, 0.001, False).objective
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def round_to_f16(model: MoEModel):
    """The checkpoint is F16; the reference is computed from exactly the weights it stores."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(f"{OUT}/gradients")
    full = Tokenizer.load("assets/tokenizer.json")
    with open(f"{OUT}/tokenizer.json", "w") as f:
        json.dump({"text": TOKENIZER_TEXT, "ids": full.encode(TOKENIZER_TEXT)}, f, ensure_ascii=False)
    for router in SHAPES:
        config = fixture_config(router)
        for variant in ("random", "trained"):
            folder = f"{OUT}/{router}-{variant}"
            os.makedirs(folder)
            tokenizer = small_tokenizer(f"{folder}/tokenizer.json", config.vocab_size)
            ids = tokenizer.encode(TEXT)
            seed = {"random": 7, "trained": 11}[variant]
            model = MoEModel(config, seed)
            if variant == "trained":
                stream = token_stream("assets", tokenizer)[:200_000]
                train_briefly(model, stream)
                round_to_f16(model)
                save_checkpoint(model, f"{folder}/tokenizer.json", folder, dtype="f16")
            else:
                with open(f"{folder}/config.json", "w") as f:
                    f.write(config.to_json())
            tensors, metadata = reference(model, ids, TEXT, seed if variant == "random" else None)
            save_file(tensors, f"{folder}/reference.safetensors", metadata=metadata)
            with torch.no_grad():
                _, routing = model(torch.tensor([ids]))
            print(f"{router}-{variant}: {len(ids)} tokens, {near_ties(routing, config.top_k)} near-tied")
            if variant == "trained":
                write_gradients(model, stream, router)


def write_gradients(model: MoEModel, stream: np.ndarray, router: str, batch: int = 2, length: int = 16):
    """Losses and gradients of one batch, as `Trainer.lossAndGradients` computes them. The batch
    is chosen so that no token's k-th and (k+1)-th probabilities tie within 1e-5 anywhere
    (there a choice could flip between the two implementations, and the gradients with it;
    the two agree to ~1e-7, and the trained MLP-Hadamard router is too even for 1e-4)."""
    config = model.config
    for attempt in range(300):
        start = 1000 + attempt * 613
        inputs = torch.from_numpy(stream[start:start + batch * length].reshape(batch, length))
        targets = torch.from_numpy(stream[start + 1:start + 1 + batch * length].reshape(batch, length))
        with torch.no_grad():
            _, routing = model(inputs)
        if near_ties(routing, config.top_k, 1e-5) == 0:
            break
    else:
        raise SystemExit(f"{router}: no batch without near-ties")
    model.zero_grad()
    logits, routing = model(inputs)
    losses = objective(logits, targets, routing, config, batch, pooled=False, **GRADIENT_OPTIONS)
    losses.objective.backward()
    tensors = {f"grad/{n}": p.grad.contiguous() for n, p in model.named_parameters()}
    tensors["inputs"] = inputs.reshape(-1).float()
    tensors["targets"] = targets.reshape(-1).float()
    tensors["losses"] = torch.tensor([losses.objective.item(), losses.cross_entropy, losses.balance, losses.z])
    save_file(tensors, f"{OUT}/gradients/{router}.safetensors", metadata={
        "sequence_length": str(length), "balance_coefficient": str(GRADIENT_OPTIONS["balance_coefficient"]),
        "z_loss_coefficient": str(GRADIENT_OPTIONS["z_coefficient"]), "torch": torch.__version__,
        "checkpoint": f"{router}-trained"})


if __name__ == "__main__":
    main()
