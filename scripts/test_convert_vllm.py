#!/usr/bin/env python3
"""Checks scripts/convert_vllm.py on small synthetic outputs shaped exactly as vLLM returns them
(see convert_vllm.py for the source it follows): 4 model layers of which layer 0 is dense (all 0,
as the capturer's zeroed buffer leaves it), top-2 of 16 experts, int32 [prompt + generated − 1,
layers, top-k] per completion; two requests, the second with n = 2 completions. Both the offline
RequestOutput form and the OpenAI server's JSON form are converted and must give the same trace.

    /work/venv/bin/python scripts/test_convert_vllm.py [path/to/moescope]
"""
import json, os, subprocess, sys, tempfile
from types import SimpleNamespace

import numpy as np
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_vllm import convert_documents, convert_request_outputs, documents_from_responses

rng = np.random.default_rng(0)
layers, experts, k = 4, 16, 2


def completion(index, prompt, generated):
    rows = len(prompt) + len(generated) - 1
    routed = np.zeros((rows, layers, k), dtype=np.int32)
    for t in range(rows):
        for l in range(1, layers):
            routed[t, l] = rng.choice(experts, size=k, replace=False)
    return SimpleNamespace(index=index, text="", token_ids=generated, cumulative_logprob=None, logprobs=None,
                           routed_experts=routed, finish_reason="length", stop_reason=None)


prompts = [[101, 102, 103], [201, 202]]
requests = [SimpleNamespace(request_id="a", prompt_token_ids=prompts[0], outputs=[completion(0, prompts[0], [11, 12, 13])]),
            SimpleNamespace(request_id="b", prompt_token_ids=prompts[1],
                            outputs=[completion(0, prompts[1], [21, 22]), completion(1, prompts[1], [31])])]
expected_tokens = [101, 102, 103, 11, 12, 201, 202, 21, 201, 202]   # prompt + generated but the last
expected_offsets = [0, 5, 8, 10]
expected_ids = np.concatenate([c.routed_experts[:, 1:, :] for r in requests for c in r.outputs])


def check(out):
    with safe_open(out, "np") as f:
        meta = f.metadata()
        assert meta["format"] == "moescope-routing-trace" and meta["num_experts"] == "16" and meta["top_k"] == "2", meta
        assert json.loads(meta["routed_layers"]) == [1, 2, 3] and meta["num_layers"] == "4", meta
        assert json.loads(meta["domains"]) == ["completion"] * 3
        assert f.get_tensor("token_ids").tolist() == expected_tokens
        assert f.get_tensor("document_offsets").tolist() == expected_offsets
        topk = f.get_tensor("topk_ids")
        assert topk.shape == (10, 3, 2) and topk.dtype == np.int32
        assert (topk == expected_ids).all(), (topk, expected_ids)
        assert (f.get_tensor("topk_weights") == 0.5).all()
        return {name: f.get_tensor(name) for name in f.keys()}


with tempfile.TemporaryDirectory() as folder:
    offline = os.path.join(folder, "offline.safetensors")
    convert_request_outputs(requests, offline, family="test", num_experts=16)
    tensors = check(offline)

    responses = os.path.join(folder, "responses.jsonl")   # what the server returns, choices in order
    with open(responses, "w") as f:
        for r in requests:
            f.write(json.dumps({"id": r.request_id, "object": "text_completion", "prompt_token_ids": r.prompt_token_ids,
                                "choices": [{"index": c.index, "text": "", "token_ids": c.token_ids, "finish_reason": "length",
                                             "routed_experts": c.routed_experts.tolist()} for c in r.outputs]}) + "\n")
    served = os.path.join(folder, "served.safetensors")
    convert_documents(documents_from_responses(responses), served, "test", {"engine": "vllm"}, num_experts=16)
    assert all((check(served)[name] == tensors[name]).all() for name in tensors)

    bad = os.path.join(folder, "bad.jsonl")   # a routed_experts one row short must be refused with one line
    with open(bad, "w") as f:
        f.write(json.dumps({"prompt_token_ids": [1, 2], "choices": [{"token_ids": [3], "routed_experts": [[[0, 1]] * 4]}]}) + "\n")
    run = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "convert_vllm.py"), bad,
                          "--out", os.path.join(folder, "x.safetensors")], capture_output=True, text=True)
    assert run.returncode != 0 and "should be [2 (prompt + generated − 1), layers, top-k]" in run.stderr, run.stderr

    if len(sys.argv) > 1:
        subprocess.run([sys.argv[1], "analyze", "--trace", offline], check=True, stdout=subprocess.DEVNULL)
print("convert_vllm: ok")
