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

from .config import ModelConfig


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
    shapes = {"default (6 layers)": ModelConfig(), "24 layers": ModelConfig(num_layers=24)}
    print(f"{args.steps} steps of 16 × 128 tokens, router {args.router}, CPU; tokens/s")
    print()
    print("| shape | PyTorch 1 process | moescope 1 thread | PyTorch 2 processes (DDP, gloo) | moescope 2 threads |")
    print("|---|---:|---:|---:|---:|")
    for label, config in shapes.items():
        path = f"{work}/{config.num_layers}.json"
        with open(path, "w") as f:
            f.write(config.to_json())
        rates = []
        for n in (1, 2):
            rates.append(torch_rate(n, path, args, f"{work}/torch-{config.num_layers}-{n}"))
            rates.append(moescope_rate(n, path, args, f"{work}/moescope-{config.num_layers}-{n}"))
        print(f"| {label} | " + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)
    print(f"\n(runs left in {work})")


if __name__ == "__main__":
    main()
