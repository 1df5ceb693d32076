#!/usr/bin/env python3
"""Convert vLLM's per-request routed experts (--enable-return-routed-experts) into a moescope routing trace.

    # on the serving machine: vllm serve MODEL --enable-return-routed-experts; save each response of
    # /v1/completions or /v1/chat/completions (with "return_token_ids": true) as a line of a JSONL file
    python scripts/convert_vllm.py responses.jsonl --out run.safetensors --family qwen3_moe \
        [--tokenizer tokenizer.json] [--routed-layers 1,2,…]
    # offline (LLM(..., enable_return_routed_experts=True)): in the same Python process
    #   from convert_vllm import convert_request_outputs
    #   convert_request_outputs(llm.generate(prompts, params), "run.safetensors", family="qwen3_moe")

Written against vLLM's own source (vllm-project/vllm; the files as stored at these commits):
vllm/model_executor/layers/fused_moe/routed_experts_capturer.py at 00bd1493b3e82d6c13c68ee8a0e1c5a96707e190,
vllm/outputs.py at 003d3ee22261b7937258b7531aee00e10393f1d6 and
vllm/model_executor/layers/fused_moe/router/base_router.py at
03919875d63dee772b22935326c8ad468683e43e; vllm/v1/core/sched/scheduler.py (`_get_routed_experts`)
was read only in search excerpts, at no single commit. What they say:

- The capturer fills an int32 buffer [tokens, hf num_hidden_layers, num_experts_per_tok], zeroed
  before every forward; each MoE layer writes its row `layer_id`, so dense layers stay all 0.
  Rows are stored by KV-cache slot in shared memory (tensor-parallel rank 0, one per data-parallel rank).
- The router calls the capture hook *before* the EPLB logical→physical mapping: the ids are
  logical experts, with or without EPLB (base_router.py, "Capture logical ids before EPLB mapping").
- When a request stops, the scheduler reads `request.num_tokens - 1` slots: one row per prompt
  token and per generated token except the last (which was sampled but never run through the model).
- Offline, each `CompletionOutput.routed_experts` is that np.ndarray [seq_len, layers, topk] next to
  `RequestOutput.prompt_token_ids` and the completion's `token_ids`; the OpenAI server returns it as
  the choice's `routed_experts` (nested lists), with `prompt_token_ids` and the choice's `token_ids`
  when the request sets `return_token_ids`.

vLLM records no dump file of its own: what exists is the per-request array in the output, so that is
what is converted. Each completion becomes one document (its prompt, then its generated tokens but
the last; with n > 1 the prompt repeats in each, domain "completion"). Dense layers are the ones whose
ids are 0 for every token and slot (a routed top-k ≥ 2 layer picks distinct experts, so never
all 0); at top-1 pass --routed-layers. No weights or logits are returned: `topk_weights` are 1/k.

Needs numpy and safetensors; not part of moescope's build.
"""
import argparse, json, os, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from routing_trace import write_trace


def documents_from_request_outputs(outputs, where="request outputs"):
    """(prompt + generated token ids [n], routed experts [n, layers, k]) per completion of vLLM
    RequestOutput objects (or objects with the same attributes)."""
    documents = []
    for r, request in enumerate(outputs):
        for completion in request.outputs:
            documents.append(_document(request.prompt_token_ids, completion.token_ids, completion.routed_experts,
                                       f"{where}: request {r} completion {completion.index}"))
    return documents


def documents_from_responses(path):
    """The same from saved OpenAI-server responses: a JSON object or list, or JSONL, one response a line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        sys.exit(f"{path}: cannot read ({error.__class__.__name__}) — pass the saved vLLM responses")
    try:
        parsed = json.loads(text)
        responses = parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError:
        responses = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                responses += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError:
                sys.exit(f"{path}: line {number} is not JSON — save one vLLM response body per line")
    documents = []
    for r, response in enumerate(responses):
        if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
            sys.exit(f"{path}: response {r} has no choices — save the response bodies vLLM returned")
        for c, choice in enumerate(response["choices"]):
            where = f"{path}: response {r} choice {c}"
            prompt = response.get("prompt_token_ids", choice.get("prompt_token_ids"))
            if prompt is None or choice.get("token_ids") is None:
                sys.exit(f"{where}: no prompt_token_ids / token_ids — send the request with \"return_token_ids\": true")
            if choice.get("routed_experts") is None:
                sys.exit(f"{where}: routed_experts is null — serve with --enable-return-routed-experts")
            documents.append(_document(prompt, choice["token_ids"], choice["routed_experts"], where))
    return documents


def _document(prompt_ids, output_ids, routed, where):
    tokens = np.asarray(list(prompt_ids) + list(output_ids), dtype=np.int64)
    try:
        ids = np.asarray(routed)
    except (ValueError, TypeError):
        ids = None
    if ids is None or (ids.size and ids.dtype.kind not in "iu"):
        sys.exit(f"{where}: routed_experts is not a [tokens, layers, top-k] array of whole numbers")
    ids = ids.astype(np.int64)
    if ids.ndim != 3 or ids.shape[0] != max(len(tokens) - 1, 0):
        sys.exit(f"{where}: routed_experts {ids.shape} should be [{len(tokens) - 1} (prompt + generated − 1), layers, top-k]")
    if (ids < 0).any() or (tokens < 0).any():
        sys.exit(f"{where}: negative expert or token id")
    return tokens[:len(ids)], ids


def convert_documents(documents, out, family, source, tokenizer=None, routed_layers=None, num_experts=None):
    documents = [d for d in documents if len(d[1])]
    if not documents:
        sys.exit("no tokens to convert")
    shapes = {d[1].shape[1:] for d in documents}
    if len(shapes) != 1:
        sys.exit(f"completions disagree on [layers, top-k]: {sorted(shapes)} — convert one model's outputs at a time")
    layer_count, k = shapes.pop()
    if routed_layers is None:
        routed_layers = [l for l in range(layer_count) if any((d[1][:, l, :] != 0).any() for d in documents)]
    if not routed_layers or any(not 0 <= l < layer_count for l in routed_layers):
        sys.exit(f"routed layers {routed_layers} must be a non-empty subset of 0…{layer_count - 1}")
    largest = max(int(d[1].max()) for d in documents)
    experts = num_experts or largest + 1
    if largest >= experts:
        sys.exit(f"expert id {largest} is not below --num-experts {experts}")
    write_trace([(d[0], d[1][:, routed_layers, :], "completion") for d in documents], out, family=family, engine="vLLM",
                num_experts=experts, top_k=k, routed_layers=routed_layers, num_layers=layer_count,
                source=source, tokenizer=tokenizer)


def convert_request_outputs(outputs, out, family="unknown", tokenizer=None, routed_layers=None, num_experts=None):
    """For a Python process that ran vLLM offline: write the trace of `llm.generate(...)`'s outputs."""
    convert_documents(documents_from_request_outputs(outputs), out, family,
                      {"engine": "vllm", "recorder": "RequestOutput routed_experts"}, tokenizer, routed_layers, num_experts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("responses", nargs="+", help="saved vLLM server responses (.json or .jsonl)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--family", default="unknown", help="model family for the metadata (deepseek_v3, qwen3_moe, …)")
    parser.add_argument("--tokenizer", help="the model's tokenizer.json, copied beside the trace")
    parser.add_argument("--routed-layers", help="comma-separated MoE layer indices (default: layers with any id ≠ 0)")
    parser.add_argument("--num-experts", type=int, help="the model's routed experts (default: largest id + 1)")
    args = parser.parse_args()
    if not args.out.endswith(".safetensors"):
        sys.exit("--out must name a .safetensors file")
    try:
        routed = [int(s) for s in args.routed_layers.split(",")] if args.routed_layers else None
    except ValueError:
        sys.exit(f"--routed-layers must be comma-separated whole numbers, got {args.routed_layers!r}")
    documents = [d for path in args.responses for d in documents_from_responses(path)]
    convert_documents(documents, args.out, args.family,
                      {"engine": "vllm", "recorder": "response routed_experts",
                       "files": [os.path.basename(p) for p in args.responses]},
                      args.tokenizer, routed, args.num_experts)


if __name__ == "__main__":
    main()
