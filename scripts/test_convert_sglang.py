#!/usr/bin/env python3
"""Checks scripts/convert_sglang.py on a small synthetic dump shaped exactly as SGLang's per_token
recorder writes it (see convert_sglang.py for the source it follows): 3 model layers of which the
first is dense (all −1), top-2 in the recorder's fixed 8 slots (the rest −1), 10 physical experts
over 8 logical ones (two redundant copies), one extend pass of two requests and one decode pass.

    /work/venv/bin/python scripts/test_convert_sglang.py [path/to/moescope]
"""
import json, os, subprocess, sys, tempfile

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(__file__))
from convert_sglang import convert

g = torch.Generator().manual_seed(0)
layers, physical, k = 3, 10, 2
p2l = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0, 5]] * layers)


def record(pass_id, mode, input_ids, seq_lens):
    t = len(input_ids)
    ids = torch.full((layers, t, 8), -1, dtype=torch.int32)
    for l in range(1, layers):
        for i in range(t):
            ids[l, i, :k] = torch.randperm(8, generator=g)[:k].int()   # distinct logical …
            ids[l, i, :k] = torch.where(ids[l, i, :k] == 0, torch.tensor(8, dtype=torch.int32), ids[l, i, :k])  # … some via redundant copies
    return dict(forward_pass_id=pass_id, rank=0, gatherer_key="primary", input_ids=input_ids, positions=list(range(t)),
                extend_seq_lens=seq_lens, forward_mode=mode, topk_ids_of_layer=ids, misc_objects=[],
                global_physical_count=torch.zeros(layers, physical, dtype=torch.int32))


records = [record(7, 1, [11, 12, 13, 14, 15], [3, 2]), record(8, 2, [21, 22], None)]
with tempfile.TemporaryDirectory() as folder:
    dump = os.path.join(folder, "expert_distribution_recorder_1733000000.0_0.pt")
    torch.save(dict(records=records, last_physical_to_logical_map=p2l), dump)
    out = os.path.join(folder, "run.safetensors")
    convert([dump], out, "test", decode=True)
    with safe_open(out, "np") as f:
        meta = f.metadata()
        assert meta["format"] == "moescope-routing-trace" and meta["num_experts"] == "8" and meta["top_k"] == "2", meta
        assert json.loads(meta["routed_layers"]) == [1, 2] and meta["num_layers"] == "3"
        assert json.loads(meta["domains"]) == ["extend", "extend", "decode"]
        assert f.get_tensor("token_ids").tolist() == [11, 12, 13, 14, 15, 21, 22]
        assert f.get_tensor("document_offsets").tolist() == [0, 3, 5, 7]
        topk = f.get_tensor("topk_ids")
        assert topk.shape == (7, 2, 2) and topk.dtype == np.int32
        expected = np.concatenate([p2l[0][r["topk_ids_of_layer"][1:, :, :k].long()].permute(1, 0, 2).numpy() for r in records])
        assert (topk == expected).all(), (topk, expected)
        assert (topk != 8).all() and (f.get_tensor("topk_weights") == 0.5).all()
    if len(sys.argv) > 1:
        subprocess.run([sys.argv[1], "analyze", "--trace", out], check=True, stdout=subprocess.DEVNULL)
print("convert_sglang: ok")
