#!/usr/bin/env python3
"""moescope against transformers on a real-width random MoE model, side by side in one run.

    /work/venv/bin/python scripts/compare_transformers.py                 # OLMoE-1B-7B width
    /work/venv/bin/python scripts/compare_transformers.py --family deepseek_v2_lite
    /work/venv/bin/python scripts/compare_transformers.py --family all    # both, one after the other

Not part of the tests. For each family it makes (once; kept under --models) a random model at
the published model's width with transformers — created directly in BF16, layers reduced so
it fits the disk and memory — and an F32 copy with fewer layers still (an F32 model of the
BF16 one's size would need twice its memory). It then times transformers' decode (KV cache,
one token at a time after a prompt, torch.inference_mode) in BF16 and F32 on 1 and 2 threads,
each in its own process so memory is returned between steps, runs
`moescope bench --model` on the same folders, the two taking turns `--rounds` times (5 by
default), and prints the medians of the rounds with their range [min–max] beside each (the
speed-up and the ratio to the limit taken round by round), every round's values, and the
memory-bandwidth limit that `moescope bench` measures (against a plain read of a buffer written just before,
and against the same read over the LM head's mapped bytes, the page cache the weights are read from). `--dtypes bfloat16` skips the F32 model. Build moescope first: `swift build -c release`.
Qwen-MoE and Mixtral shapes are not included: at their published widths even one or two layers
exceed the memory this shared machine allows one process.
"""
import argparse, gc, json, os, statistics, subprocess, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# Published widths; `layers` / `f32_layers` are the reduced depths made here.
FAMILIES = {
    # OLMoE-1B-7B: 64 experts × 1024, top-8, no renormalisation; 16 layers published.
    "olmoe": dict(layers=4, f32_layers=2, config=dict(
        model_type="olmoe", architectures=["OlmoeForCausalLM"], vocab_size=50304, hidden_size=2048,
        intermediate_size=1024, num_attention_heads=16, num_key_value_heads=16, num_experts=64,
        num_experts_per_tok=8, norm_topk_prob=False, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, clip_qkv=None, tie_word_embeddings=False)),
    # DeepSeek-V2-Lite: latent attention (rank 512, full-rank query), 64 experts × 1408, top-6,
    # 2 shared experts, a dense first layer; 27 layers published.
    "deepseek_v2_lite": dict(layers=3, f32_layers=2, config=dict(
        model_type="deepseek_v2", architectures=["DeepseekV2ForCausalLM"], vocab_size=102400, hidden_size=2048,
        intermediate_size=10944, moe_intermediate_size=1408, num_attention_heads=16, num_key_value_heads=16,
        n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1,
        kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0, norm_topk_prob=False,
        max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)),
}


def log(message):
    print(message, file=sys.stderr, flush=True)


def make_model(family, folder, layers, dtype_name):
    """A random model made directly in `dtype_name` (never a full F32 copy of a BF16 model)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    if os.path.exists(os.path.join(folder, "config.json")):
        return
    spec = dict(FAMILIES[family]["config"])
    spec["num_hidden_layers"] = layers
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(model_type, **spec)
    dtype = getattr(torch, dtype_name)
    log(f"making {family} ({layers} layers, {dtype_name}) in {folder} ...")
    began = time.time()
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, max_shard_size="2GB")
    params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    log(f"  {params / 1e9:.2f} B parameters in {time.time() - began:.0f} s")


def time_transformers(folder, threads, prompt, steps, repeats):
    """transformers' decode in this process: prefill the prompt, then one token at a time."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    model.eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, vocab, (1, prompt + steps * repeats), generator=generator)
    prefill, decode = [], []
    with torch.inference_mode():
        model(input_ids=tokens[:, :4], use_cache=True)          # warm-up
        for r in range(repeats):
            began = time.perf_counter()
            out = model(input_ids=tokens[:, :prompt], use_cache=True)
            prefill.append(time.perf_counter() - began)
            past = out.past_key_values
            for s in range(steps):
                token = tokens[:, prompt + r * steps + s: prompt + r * steps + s + 1]
                began = time.perf_counter()
                out = model(input_ids=token, past_key_values=past, use_cache=True)
                decode.append((time.perf_counter() - began) * 1e3)
                past = out.past_key_values
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "RssAnon", "RssFile"):
                fields[name] = int(value.split()[0]) * 1024
    # RssAnon: the model transformers holds; VmHWM also counts the file pages it read it from.
    return dict(decode_ms=statistics.median(decode), prefill_tps=prompt / statistics.median(prefill),
                peak_rss=fields.get("VmHWM", 0), anon_rss=fields.get("RssAnon", 0))


def run_transformers(folder, threads, args):
    command = [sys.executable, os.path.abspath(__file__), "--time-transformers", folder, "--threads", str(threads),
               "--prompt", str(args.prompt), "--steps", str(args.steps), "--repeats", str(args.repeats)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_moescope(folder, args):
    binary = os.path.join(ROOT, ".build", "release", "moescope")
    if not os.path.exists(binary):
        sys.exit(f"{binary} not found: build it first with `swift build -c release`")
    env = dict(os.environ, MOESCOPE_THREADS=str(max(args.threads)))
    out = subprocess.run([binary, "bench", "--model", folder, "--json", "--repeats", str(args.repeats),
                          "--prompt-tokens", str(args.prompt), "--decode-tokens", str(args.steps)],
                         check=True, capture_output=True, text=True, env=env)
    return {r["name"]: r["value"] for r in json.loads(out.stdout)["results"]}


def compare(family, args):
    spec = FAMILIES[family]
    rows = []
    variants = [("bfloat16", spec["layers"])] + ([("float32", spec["f32_layers"])] if spec["f32_layers"] else [])
    variants = [v for v in variants if v[0] in args.dtypes]
    for dtype_name, layers in variants:
        folder = os.path.join(args.models, f"{family}-{layers}L-{dtype_name}")
        make_model(family, folder, layers, dtype_name)
        # moescope and transformers take turns, `--rounds` times, and the median of the rounds
        # is reported for each side: on a shared machine one run can land in a busy minute.
        # The speed-up is taken per round (the two sides ran minutes apart) and its median shown.
        ours, theirs, loads = [], {t: [] for t in args.threads}, []
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            log(f"round {round_ + 1}/{args.rounds} (load {loads[-1]:.1f}): moescope bench --model {folder} ...")
            ours.append(run_moescope(folder, args))
            for threads in args.threads:
                log(f"round {round_ + 1}/{args.rounds}: transformers, {dtype_name}, {threads} thread(s) ...")
                theirs[threads].append(run_transformers(folder, threads, args))
        loads.append(os.getloadavg()[0])
        med = statistics.median
        for threads in args.threads:
            label = "1 thread" if threads == 1 else f"{threads} threads"
            if f"decode ms/token ({label})" not in ours[0]:
                continue
            our_ms = [o[f"decode ms/token ({label})"] for o in ours]
            their_ms = [t["decode_ms"] for t in theirs[threads]]
            bandwidth = [o[f"read bandwidth, median of runs ({label})"] for o in ours]
            bytes_ = ours[0]["weight bytes read per decoded token"]
            rows.append(dict(dtype=dtype_name, layers=layers, threads=threads, theirs=med(their_ms), ours=med(our_ms),
                             speedups=[t / o for t, o in zip(their_ms, our_ms)],
                             rounds_ours=our_ms, rounds_theirs=their_ms,
                             bandwidth=med(bandwidth), limit=bytes_ / med(bandwidth),
                             paireds=[o[f"decode / bandwidth limit, paired ({label})"] for o in ours],
                             weight_read=med([o[f"read bandwidth of the mapped weights, median of runs ({label})"] for o in ours]),
                             weight_paireds=[o[f"decode / weight-read limit, paired ({label})"] for o in ours],
                             kernel=med([o[f"matrix-vector kernel read rate ({label})"] for o in ours]),
                             kernel_share=med([o[f"matrix-vector kernel read rate ({label})"] / o[f"read bandwidth ({label})"] for o in ours]),
                             their_prefill=med([t["prefill_tps"] for t in theirs[threads]]),
                             our_prefill=med([o[f"prefill tokens/s ({label})"] for o in ours]),
                             their_rss=max(t["peak_rss"] for t in theirs[threads]) / 1e6,
                             their_anon=max(t["anon_rss"] for t in theirs[threads]) / 1e6,
                             our_rss=max(o["peak RSS"] for o in ours), touched=max(o["resident weights (mapped file pages)"] for o in ours),
                             bytes=bytes_, weights=ours[0]["weights"] / 1e3, loads=loads))
    print(f"\n## {family}: published width, random weights (transformers {transformers_version()}, torch {torch_version()}; "
          f"medians of {args.rounds} interleaved rounds, [min–max] of the rounds beside each)\n")
    # Each median is followed by the range of the rounds [min–max], so a reader sees how much
    # of a difference the machine's own minute-to-minute spread could explain.
    def spread(values, digits, suffix=""):
        return f"{med(values):.{digits}f}{suffix} [{min(values):.{digits}f}–{max(values):.{digits}f}]"
    print("| dtype | layers | threads | load avg | MB read/token | transformers ms/token | moescope ms/token | speed-up "
          "| read GB/s | limit ms/token | moescope / limit (paired) | weights' read GB/s | moescope / weight-read limit (paired) "
          "| kernel GB/s (% of read) | prefill tok/s (tf / moescope) | RSS MB: tf peak (anon) / moescope peak (weights touched) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dtype']} | {r['layers']} | {r['threads']} | {min(r['loads']):.1f}–{max(r['loads']):.1f} | {r['bytes']:.0f} | "
              f"{spread(r['rounds_theirs'], 1)} | {spread(r['rounds_ours'], 1)} | {spread(r['speedups'], 2, 'x')} | "
              f"{r['bandwidth']:.1f} | {r['limit']:.1f} | {spread(r['paireds'], 2, 'x')} | "
              f"{r['weight_read']:.1f} | {spread(r['weight_paireds'], 2, 'x')} | "
              f"{r['kernel']:.1f} ({r['kernel_share'] * 100:.0f} %) | {r['their_prefill']:.0f} / {r['our_prefill']:.0f} | "
              f"{r['their_rss']:.0f} ({r['their_anon']:.0f}) / {r['our_rss']:.0f} ({r['touched']:.0f}) |")
    print("\nPer round, ms/token (transformers / moescope = speed-up; moescope / limit, paired; / weight-read limit, paired):")
    for r in rows:
        pairs = ", ".join(f"{t:.1f} / {o:.1f} = {x:.2f}x; {p:.2f}x; {w:.2f}x"
                          for t, o, x, p, w in zip(r["rounds_theirs"], r["rounds_ours"], r["speedups"], r["paireds"], r["weight_paireds"]))
        print(f"- {r['dtype']}, {r['threads']} thread(s): {pairs}")
    sys.stdout.flush()


def transformers_version():
    import transformers
    return transformers.__version__


def torch_version():
    import torch
    return torch.__version__.split("+")[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="olmoe", choices=list(FAMILIES) + ["all"])
    parser.add_argument("--models", default="/work/models", help="where the random models are made (not committed)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens (prefill)")
    parser.add_argument("--steps", type=int, default=16, help="tokens decoded one at a time per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per process (their median is taken)")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"],
                        help="which of the two models to time (DeepSeek-V2-Lite's F32 copy is optional)")
    parser.add_argument("--rounds", type=int, default=5, help="times moescope and transformers take turns (medians reported)")
    parser.add_argument("--time-transformers", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_transformers:
        print(json.dumps(time_transformers(args.time_transformers, args.threads[0], args.prompt, args.steps, args.repeats)))
        return
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at start")
    for family in (FAMILIES if args.family == "all" else [args.family]):
        compare(family, args)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()
