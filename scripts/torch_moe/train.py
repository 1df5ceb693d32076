"""Train moescope's MoE model in PyTorch, on one process or many:

    PYTHONPATH=scripts torchrun --nproc_per_node N -m torch_moe.train --router gru --steps 800 --out runs/torch-gru

DDP over gloo on CPUs, NCCL on GPUs (one process per GPU, bf16 autocast). Same data, losses,
AdamW, schedule, clipping and initialisation as `moescope train`; the result is a moescope
checkpoint that `moescope --checkpoint DIR`, `trace`, `analyze` and `compare` open.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import load_state, save_checkpoint, save_state
from .config import ROUTERS, ModelConfig
from .data import batch, token_stream
from .model import MoEModel, objective
from .tokenizer import Tokenizer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def learning_rate(step: int, peak: float, warmup: int, total: int, floor: float = 0.1) -> float:
    """Linear warm-up to `peak`, cosine decay to floor·peak at the last step (0-based step),
    moescope's `LearningRateSchedule`."""
    warmup = min(warmup, total)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def parse(argv=None):
    p = argparse.ArgumentParser(prog="torch_moe.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--router", choices=ROUTERS, default="gru")
    p.add_argument("--config", help="model shape as a config.json (default: moescope's standard shape)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step, over all processes")
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--balance", choices=("per-layer", "pooled"), default="per-layer",
                   help="per-layer: mean over layers (Switch/Mixtral); pooled: one loss over all layers' routing (RMoE's code)")
    p.add_argument("--balance-coefficient", type=float, default=None, help="default 0.01 per-layer, 0.001 pooled")
    p.add_argument("--balance-groups", type=int, default=2,
                   help="the batch is cut into this many groups of whole sequences for the auxiliary losses "
                        "(moescope's 2 batch shards; with more processes than groups, one per process)")
    p.add_argument("--z-loss", type=float, default=0.0, help="router z-loss coefficient (0 = off; ST-MoE uses 0.001)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="checkpoint directory (default runs/torch-<router>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run saved in --out")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f16", help="weights of the final checkpoint")
    p.add_argument("--assets", default=os.path.join(REPO, "assets"), help="corpus and tokenizer")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 autocast on GPUs, fp32 on CPUs")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (default: cores ÷ local processes)")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "save_every", "balance_groups"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.sequence_length < 2:
        p.error("--sequence-length must be at least 2")
    if not args.learning_rate > 0:
        p.error("--learning-rate must be positive")
    if args.balance_coefficient is None:
        args.balance_coefficient = 0.01 if args.balance == "per-layer" else 0.001
    args.out = args.out or f"runs/torch-{args.router}"
    return args


# Options that decide the run: a resume must repeat them.
RUN_OPTIONS = ("steps", "batch_size", "sequence_length", "learning_rate", "warmup", "weight_decay", "clip_norm",
               "balance", "balance_coefficient", "balance_groups", "z_loss", "seed")


class Stop:
    """SIGINT/SIGTERM set a flag; the loop saves the state at the end of the step and exits."""
    signal = 0

    @classmethod
    def install(cls):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, frame: setattr(cls, "signal", number))


def cached_stream(assets: str, tokenizer: Tokenizer, tokenizer_path: str, local_rank: int, distributed: bool):
    """The training split's token ids, tokenised once per corpus and tokenizer and cached on
    each machine (the first process of each node writes it, the others wait)."""
    corpus = os.path.join(assets, "corpus", "corpus.jsonl")
    digest = hashlib.sha256()
    for path in (corpus, tokenizer_path):
        with open(path, "rb") as f:
            digest.update(f.read())
    cache_dir = os.environ.get("TORCH_MOE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "torch_moe"))
    path = os.path.join(cache_dir, f"train-{digest.hexdigest()[:16]}.npy")
    if local_rank == 0 and not os.path.exists(path):
        tokens = token_stream(assets, tokenizer)
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, tokens)
        os.replace(tmp, path)
    if distributed:
        dist.barrier()
    return np.load(path)


def log(rank: int, message: str):
    if rank == 0:
        print(message, file=sys.stderr, flush=True)


def fail(message: str):
    """One line and exit 1. Every process reaches the same failures (same files, all-reduced
    losses), so only the first prints."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def main(argv=None):
    args = parse(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        fail("--device cuda but PyTorch sees no GPU — use --device cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        device = torch.device("cpu")
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local_world))
    distributed = world > 1
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if args.batch_size % world:
        fail(f"--batch-size {args.batch_size} is not divisible by the {world} processes — use a multiple of {world}")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and use_cuda)

    tokenizer_path = os.path.join(args.assets, "tokenizer.json")
    try:
        tokenizer = Tokenizer.load(tokenizer_path)
        config = ModelConfig.load(args.config) if args.config else ModelConfig()
        config.router, config.vocab_size = args.router, tokenizer.vocab_size
        config.validate(args.config or "config")
    except (OSError, ValueError) as error:
        fail(str(error))
    if args.sequence_length > config.context_length:
        fail(f"--sequence-length {args.sequence_length} exceeds the model's context of {config.context_length}")
    tokens = cached_stream(args.assets, tokenizer, tokenizer_path, local_rank, distributed)

    options = {name: getattr(args, name) for name in RUN_OPTIONS}
    state_path = os.path.join(args.out, "training-state.pt")
    model = MoEModel(config, args.seed)
    model.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]      # matrices only, as moescope
    no_decay = [p for p in model.parameters() if p.dim() < 2]    # norm gains, GRU biases, mix logits
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(0.9, 0.95), eps=1e-8, foreach=not use_cuda,
                                  fused=use_cuda or None)
    step = 0
    if args.resume:
        if not os.path.exists(state_path):
            fail(f"nothing to resume: {state_path} does not exist — start the run without --resume")
        try:
            state = load_state(state_path)
        except ValueError as error:
            fail(str(error))
        if state["options"] != options:
            changed = ", ".join(f"{k} ({state['options'].get(k)} then, {v} now)" for k, v in options.items() if state["options"].get(k) != v)
            fail(f"cannot resume from {state_path}: it was started with different {changed} — resume with the options the run started with")
        if state["config"] != config.to_json():
            fail(f"cannot resume from {state_path}: its model config differs — resume with the config the run started with")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    elif os.path.exists(state_path):
        fail(f"{args.out} holds an unfinished run — continue it with --resume, or delete {state_path} to start over")
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)

    network = DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None) if distributed else model
    parameters = sum(p.numel() for p in model.parameters())
    log(rank, f"training {args.router}: {parameters} parameters, {len(tokens)} training tokens, {args.steps} steps of "
              f"{args.batch_size * args.sequence_length} tokens on {world} {'GPU' if use_cuda else 'CPU'} process"
              f"{'es' if world > 1 else ''}{' (bf16 autocast)' if bf16 else ''}{f', resuming at step {step}' if step else ''}")

    log_path = os.path.join(args.out, "log.jsonl")
    if rank == 0:   # a resumed run continues the log from its step
        kept = [line for line in open(log_path)] if os.path.exists(log_path) and step else []
        with open(log_path, "w") as f:
            f.writelines(line for line in kept if json.loads(line)["step"] <= step)
    Stop.install()
    local = args.batch_size // world
    # Groups for the auxiliary losses: moescope's shards, spread over the processes.
    groups = max(1, args.balance_groups // world)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and use_cuda else (
        torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
    began, start_step, recent = time.perf_counter(), step, []
    while step < args.steps:
        inputs, targets = batch(tokens, step, args.seed, args.batch_size, args.sequence_length)
        inputs = torch.from_numpy(inputs[rank * local:(rank + 1) * local]).to(device, non_blocking=True)
        targets = torch.from_numpy(targets[rank * local:(rank + 1) * local]).to(device, non_blocking=True)
        with autocast:
            logits, routing = network(inputs)
        losses = objective(logits, targets, routing, config, local, groups, args.balance_coefficient, args.z_loss,
                           args.balance == "pooled")
        optimizer.zero_grad(set_to_none=False)
        losses.objective.backward()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.double()) for p in model.parameters()]))
        metrics = torch.tensor([losses.objective.item(), losses.cross_entropy, losses.balance, losses.z, float(Stop.signal)],
                               dtype=torch.float64, device=device)
        if distributed:
            stop = metrics[4].clone()
            dist.all_reduce(metrics)
            metrics /= world
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            metrics[4] = stop
        loss, ce, balance, z = metrics[:4].tolist()
        norm = norm.item()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            fail(f"the {'loss' if not math.isfinite(loss) else 'gradient norm'} became NaN/inf at step {step + 1}; "
                 "parameters were left as they were — lower --learning-rate, or resume from the last state")
        scale = args.clip_norm / norm if norm > args.clip_norm else 1.0
        if scale != 1.0:
            torch._foreach_mul_([p.grad for p in model.parameters()], scale)
        lr = learning_rate(step, args.learning_rate, args.warmup, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        step += 1
        recent = (recent + [ce])[-20:]
        elapsed = time.perf_counter() - began
        rate = (step - start_step) * args.batch_size * args.sequence_length / elapsed
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "loss": loss, "cross_entropy": ce, "balance": balance, "z_loss": z,
                                    "gradient_norm": norm, "learning_rate": lr, "tokens_per_second": rate}) + "\n")
            eta = (args.steps - step) * elapsed / (step - start_step)
            log(rank, f"step {step}/{args.steps} · {rate:.0f} tok/s · loss {sum(recent) / len(recent):.3f} (ce {ce:.4f}) · "
                      f"balance {balance:.3f} · lr {lr:.2e} · ETA {eta:.0f}s")
        stop = int(metrics[4].item())
        if (stop or step % args.save_every == 0) and step < args.steps:
            if rank == 0:
                save_state(state_path, model, optimizer, step, options, config.to_json())
            if distributed:
                dist.barrier()
            if stop:
                log(rank, f"stopped by signal {stop} after step {step}; state saved to {state_path} — continue with --resume")
                if distributed:
                    dist.destroy_process_group()
                raise SystemExit(128 + stop)
    if rank == 0:
        save_checkpoint(model, tokenizer_path, args.out, args.dtype, {
            "steps": args.steps, "seed": args.seed, "tokens_seen": args.steps * args.batch_size * args.sequence_length,
            "final_train_loss": f"{sum(recent) / max(1, len(recent)):.4f}", "processes": world})
        if os.path.exists(state_path):
            os.remove(state_path)
        print(f"trained {args.router} in {time.perf_counter() - began:.0f}s: train loss {sum(recent) / max(1, len(recent)):.3f} "
              f"(mean of the last {len(recent)} steps); checkpoint written to {args.out}", flush=True)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
