"""Writes a moescope routing-trace file (README, "Routing from bigger machines") from documents
recorded by a serving engine; shared by the converters (convert_sglang.py, convert_vllm.py)."""
import json, os, shutil, sys

import numpy as np
from safetensors.numpy import save_file


def write_trace(documents, out, *, family, engine, num_experts, top_k, routed_layers, num_layers, source, tokenizer=None):
    """documents: (token ids [n], expert ids [n, routed layers, top_k], domain) in file order. No engine
    records router weights, so `topk_weights` are written as 1/k and the routing rule says so."""
    topk = np.ascontiguousarray(np.concatenate([d[1] for d in documents])).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(d[0]) for d in documents])]).astype(np.int64)
    metadata = {
        "format": "moescope-routing-trace", "version": "1", "family": family,
        "num_experts": str(num_experts), "top_k": str(top_k), "routed_layers": json.dumps(routed_layers),
        "num_layers": str(num_layers),
        "routing_rule": f"as served by {engine} (weights not recorded: topk_weights are 1/k)",
        "source": json.dumps(source),
        "domains": json.dumps([d[2] for d in documents]),
    }
    if tokenizer:
        name = os.path.basename(out)[:-len(".safetensors")] + ".tokenizer.json"
        shutil.copyfile(tokenizer, os.path.join(os.path.dirname(os.path.abspath(out)), name))
        metadata["tokenizer_path"] = name
    save_file({"token_ids": np.concatenate([d[0] for d in documents]).astype(np.int32), "document_offsets": offsets,
               "topk_ids": topk, "topk_weights": np.full(topk.shape, 1.0 / top_k, dtype=np.float32)}, out, metadata=metadata)
    print(f"wrote {out}: {len(topk)} tokens × {len(routed_layers)} layers × top-{top_k} of {num_experts} experts, "
          f"{len(documents)} documents", file=sys.stderr)
