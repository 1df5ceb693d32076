"""Training throughput, PyTorch (torch_moe under torchrun) beside moescope's own trainer, in one
run: tokens/s for the default shape and a 24-layer one, on 1 and 2 CPU processes (one thread
each) against `moescope train` on 1 and 2 threads. From the repository root, with a release build:

    PYTHONPATH=scripts /work/venv/bin/python -m torch_moe.throughput [--steps 8] [--router gru]

Rate = tokens of all steps ÷ wall time of the training loop (setup and tokenising excluded),
the same definition on both sides. On a GPU node, the PyTorch figure is what
`torchrun --nproc_per_node N -m torch_moe.train …` prints per step (not measured here).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

from .config import ModelConfig


def training_flops_per_token(c: ModelConfig, sequence_length: int = 128) -> float:
    """Matrix-product FLOPs of one training token: 3 × the forward's (backward ≈ 2 × forward);
    the forward has 2 FLOPs per multiply-add of the projections, the k routed experts, the
    router, the LM head, and causal attention (on average T/2 keys, for QKᵀ and AV)."""
    d, e, r, p = c.hidden_size, c.num_experts, c.router_hidden_size, c.gru_hidden_size
    router = {"linear": e * d, "mlp": r * d + e * r, "attention": r * d + e * r, "hybrid": e * d + r * d + e * r,
              "hash": 0, "mlp-hadamard": 2 * r * d + e * r, "gru": p * d + 6 * p * p + e * p}[c.router]
    per_layer = 4 * d * d + c.top_k * 3 * d * c.expert_hidden_size + router
    forward = 2 * (c.num_layers * per_layer + d * c.vocab_size) + c.num_layers * 2 * sequence_length * d
    return 3 * forward


def gemm_ceiling() -> float:
    """FP32 GFLOP/s of PyTorch's best square product on one thread: the practical ceiling."""
    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = min(_timed(lambda: a @ b) for _ in range(7))
    return 2 * 1024 ** 3 / best / 1e9


def _timed(f) -> float:
    began = time.perf_counter()
    f()
    return time.perf_counter() - began


def torch_rate(processes: int, config: str, args, out: str) -> float:
    env = dict(os.environ, PYTHONPATH="scripts", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "torch_moe.train", "--router", args.router, "--steps", str(args.steps), "--config", config,
               "--threads", "1", "--device", "cpu", "--out", out, "--save-every", str(args.steps + 1)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = [json.loads(line) for line in open(f"{out}/log.jsonl")][-1]
    return last["tokens_per_second"]


def moescope_rate(threads: int, config: str, args, out: str) -> float:
    env = dict(os.environ, MOESCOPE_THREADS=str(threads))
    run = subprocess.run([args.moescope, "train", "--router", args.router, "--steps", str(args.steps), "--config", config,
                          "--out", out, "--save-every", str(args.steps + 1)],
                         env=env, check=True, capture_output=True, text=True)
    # Non-terminal progress: the final line (step N/N) carries the rate over the whole loop.
    rates = re.findall(r"step (\d+)/(\d+) · ([0-9.]+) tok/s", run.stderr)
    done = [float(r) for s, n, r in rates if s == n]
    return done[-1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--router", default="gru")
    p.add_argument("--moescope", default=".build/release/moescope")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="torch_moe_throughput.")
    shapes = {"default (6 layers)": ModelConfig(router=args.router), "24 layers": ModelConfig(router=args.router, num_layers=24)}
    ceiling = gemm_ceiling()
    print(f"{args.steps} steps of 16 × 128 tokens, router {args.router}, CPU ({os.cpu_count()} cores). "
          f"Ceiling: PyTorch's best 1024² FP32 product on one thread, {ceiling:.1f} GFLOP/s.")
    print()
    print("| shape | trainer | tokens/s, 1 core | model GFLOP/s | of ceiling | tokens/s, 2 cores | model GFLOP/s | of 2 × ceiling |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, config in shapes.items():
        path = f"{work}/{config.num_layers}.json"
        with open(path, "w") as f:
            f.write(config.to_json())
        flops = training_flops_per_token(config)
        rows = {"PyTorch (torchrun, 1 / 2 processes)": [], "moescope train (1 / 2 threads)": []}
        for n in (1, 2):
            rows["PyTorch (torchrun, 1 / 2 processes)"].append(torch_rate(n, path, args, f"{work}/torch-{config.num_layers}-{n}"))
            rows["moescope train (1 / 2 threads)"].append(moescope_rate(n, path, args, f"{work}/moescope-{config.num_layers}-{n}"))
        for trainer, (one, two) in rows.items():
            print(f"| {label} | {trainer} | {one:.0f} | {one * flops / 1e9:.1f} | {one * flops / 1e9 / ceiling:.0%} "
                  f"| {two:.0f} | {two * flops / 1e9:.1f} | {two * flops / 1e9 / (2 * ceiling):.0%} |", flush=True)
        print(f"| {label} | moescope ÷ PyTorch | {rows['moescope train (1 / 2 threads)'][0] / rows['PyTorch (torchrun, 1 / 2 processes)'][0]:.2f}× | | "
              f"| {rows['moescope train (1 / 2 threads)'][1] / rows['PyTorch (torchrun, 1 / 2 processes)'][1]:.2f}× | | |", flush=True)
    print(f"\nModel FLOPs per training token: {training_flops_per_token(shapes['default (6 layers)']) / 1e6:.1f} M (default), "
          f"{training_flops_per_token(shapes['24 layers']) / 1e6:.1f} M (24 layers). Runs left in {work}.")


if __name__ == "__main__":
    main()
