#!/usr/bin/env python3
"""Convert SGLang's per-token expert-distribution dumps into a moescope routing trace.

    # on the serving machine: --expert-distribution-recorder-mode per_token, then
    # POST /start_expert_distribution_record, run the workload, POST /stop_… and /dump_…
    python scripts/convert_sglang.py expert_distribution_recorder_1733000000.0_0.pt \
        --out run.safetensors --family deepseek_v3 [--tokenizer tokenizer.json] [--decode]

Written against sglang's python/sglang/srt/eplb/expert_distribution.py at commit
02295fe5ac5ccff3e8829800d50450351c56fb53: the per_token mode's `_DetailAccumulator.dump`
torch.saves {"records": [...], "last_physical_to_logical_map": [layers, physical experts]};
each record (one forward pass on one rank) holds `forward_pass_id`, `rank`, `input_ids`,
`positions`, `extend_seq_lens` (tokens per request in an extend/prefill pass), `forward_mode`,
`topk_ids_of_layer` int32 [model layers, tokens, 8] of *physical* expert ids (−1 where a layer
routes nothing, or for slots past the model's top-k: the gatherer's width is fixed at 8), and
counts. Physical ids are mapped to logical experts with the dump's last physical-to-logical map
(it may have changed during the recording if EPLB rebalanced; the dump keeps only the last).

Each request of an extend pass becomes one document (domain "extend"). Decode passes carry one
token per running request and no request ids, so they cannot be stitched into per-request
documents: `--decode` adds each decode pass as a document of its own (domain "decode"); by
default they are left out. The dump holds no router weights or logits, so `topk_weights` are
written as 1/k and the metadata says so. One file is one rank; pass several files to
concatenate ranks (under data-parallel attention each rank sees different requests).

Needs torch, numpy and safetensors; not part of moescope's build.
"""
import argparse, json, os, shutil, sys

import numpy as np
import torch
from safetensors.numpy import save_file

EXTEND, DECODE = 1, 2   # sglang ForwardMode values for EXTEND and DECODE


def convert(paths, out, family, tokenizer=None, decode=False, top_k=None):
    documents = []   # (token ids [n], logical ids [n, layers, 8], domain)
    physical_to_logical, layer_count = None, None
    for path in paths:
        dump = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(dump, dict) or "records" not in dump or "last_physical_to_logical_map" not in dump:
            sys.exit(f"{path}: not a per_token expert-distribution dump (no records / last_physical_to_logical_map)")
        mapping = torch.as_tensor(dump["last_physical_to_logical_map"]).long()
        if physical_to_logical is not None and not torch.equal(mapping, physical_to_logical):
            print(f"note: {path} has another physical-to-logical map; each file is mapped with its own", file=sys.stderr)
        physical_to_logical = mapping
        for number, record in enumerate(sorted(dump["records"], key=lambda r: r["forward_pass_id"])):
            if "topk_ids_of_layer" not in record:
                sys.exit(f"{path}: record {number} has no topk_ids_of_layer — record with --expert-distribution-recorder-mode per_token")
            ids = torch.as_tensor(record["topk_ids_of_layer"]).long()     # [layers, tokens, 8], physical
            tokens = torch.as_tensor(record["input_ids"]).long()
            if ids.dim() != 3 or ids.shape[1] != len(tokens) or ids.shape[0] != mapping.shape[0]:
                sys.exit(f"{path}: record {number}: topk_ids_of_layer {tuple(ids.shape)} does not fit "
                         f"{len(tokens)} input_ids and {mapping.shape[0]} layers")
            layer_count = ids.shape[0]
            valid = ids >= 0
            logical = torch.where(valid, torch.gather(mapping, 1, ids.clamp(min=0).reshape(layer_count, -1)).reshape(ids.shape), ids)
            logical = logical.permute(1, 0, 2)   # [tokens, layers, 8]
            mode = record.get("forward_mode")
            if mode == DECODE:
                if decode and len(tokens):
                    documents.append((tokens.numpy(), logical.numpy(), "decode"))
                continue
            lengths = record.get("extend_seq_lens") or [len(tokens)]
            if sum(lengths) != len(tokens):
                sys.exit(f"{path}: record {number}: extend_seq_lens {lengths} do not add up to {len(tokens)} tokens")
            start = 0
            for n in lengths:
                if n:
                    documents.append((tokens[start:start + n].numpy(), logical[start:start + n].numpy(), "extend"))
                start += n
    if not documents:
        sys.exit("no tokens to convert (only decode passes? add --decode)")
    all_ids = np.concatenate([d[1] for d in documents])
    routed = [l for l in range(layer_count) if (all_ids[:, l, :] >= 0).any()]
    columns = [s for s in range(all_ids.shape[2]) if (all_ids[:, routed, s] >= 0).all()]
    k = top_k or len(columns)
    if not routed or k == 0 or columns != list(range(k)):
        sys.exit(f"cannot tell the routed layers or top-k: {len(routed)} routed layers, complete slots {columns}")
    topk = np.ascontiguousarray(all_ids[:, routed, :k]).astype(np.int32)
    experts = int(physical_to_logical.max()) + 1
    offsets = np.concatenate([[0], np.cumsum([len(d[0]) for d in documents])]).astype(np.int64)
    metadata = {
        "format": "moescope-routing-trace", "version": "1", "family": family,
        "num_experts": str(experts), "top_k": str(k), "routed_layers": json.dumps(routed), "num_layers": str(layer_count),
        "routing_rule": "as served by SGLang (weights not recorded: topk_weights are 1/k)",
        "source": json.dumps({"engine": "sglang", "recorder": "expert_distribution per_token", "files": [os.path.basename(p) for p in paths],
                              "decode_passes": "included" if decode else "left out"}),
        "domains": json.dumps([d[2] for d in documents]),
    }
    if tokenizer:
        name = os.path.basename(out)[:-len(".safetensors")] + ".tokenizer.json"
        shutil.copyfile(tokenizer, os.path.join(os.path.dirname(os.path.abspath(out)), name))
        metadata["tokenizer_path"] = name
    save_file({"token_ids": np.concatenate([d[0] for d in documents]).astype(np.int32), "document_offsets": offsets,
               "topk_ids": topk, "topk_weights": np.full(topk.shape, 1.0 / k, dtype=np.float32)}, out, metadata=metadata)
    print(f"wrote {out}: {len(topk)} tokens × {len(routed)} layers × top-{k} of {experts} experts, {len(documents)} documents",
          file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dumps", nargs="+", help="expert_distribution_recorder_*.pt files (per_token mode)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--family", default="unknown", help="model family for the metadata (deepseek_v3, qwen3_moe, …)")
    parser.add_argument("--tokenizer", help="the model's tokenizer.json, copied beside the trace")
    parser.add_argument("--decode", action="store_true", help="also keep decode passes, one document each")
    parser.add_argument("--top-k", type=int, help="the model's top-k (default: the slots every token fills)")
    args = parser.parse_args()
    if not args.out.endswith(".safetensors"):
        sys.exit("--out must name a .safetensors file")
    convert(args.dumps, args.out, args.family, args.tokenizer, args.decode, args.top_k)


if __name__ == "__main__":
    main()
