#!/usr/bin/env python3
"""Record how a transformers MoE model routes a corpus, as a moescope routing trace.

    python scripts/capture_transformers.py --model Qwen/Qwen3-30B-A3B --input corpus.jsonl \
        --out qwen3.safetensors --dtype bfloat16 --batch-size 8 --max-length 2048

Runs where the model fits (``device_map="auto"`` spreads it over every GPU, then CPU), with a
forward hook on each MoE layer's gate module, so it works for families whose forward does not
return ``router_logits``. What the hooks see is written to ``OUT.parts/`` one batch at a time,
with a ``progress.json`` naming the documents done: an interrupted capture (Ctrl-C, a lost
node) is resumed by running the same command again. When every document is done the parts
are joined into OUT (the format in moescope's README, "Routing from bigger machines") and the
model's tokenizer.json is copied beside it as OUT's name + ".tokenizer.json".

Input: a UTF-8 text file (one document; ``--lines`` makes each non-empty line one), or JSONL
with a "text" field per line and an optional "domain" (or "label") field. A document longer
than --max-length tokens is routed in consecutive windows of that length.

Not part of moescope's build or tests; it needs torch, transformers and safetensors.
"""
import argparse, importlib.util, json, os, shutil, sys, time

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

FORMAT, VERSION = "moescope-routing-trace", 1


def read_documents(path, lines):
    """[(text, domain)] in file order."""
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            docs = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    docs.append((str(record["text"]), str(record.get("domain", record.get("label", "")))))
                except (ValueError, KeyError, TypeError) as error:
                    sys.exit(f"{path}:{number}: each line must be a JSON object with a \"text\" field ({error})")
            return docs
        text = f.read()
    if lines:
        return [(line, "") for line in text.split("\n") if line.strip()]
    return [(text, "")]


def routing_rule(config):
    """The model's routing rule in words, for the trace's metadata."""
    kind = getattr(config, "model_type", "")
    k = getattr(config, "num_experts_per_tok", None)
    if kind == "deepseek_v3":
        return (f"sigmoid scores + e_score_correction_bias, {config.n_group} groups, top-{config.topk_group} groups, "
                f"top-{k}, renormalised={bool(config.norm_topk_prob)}, scaled by {config.routed_scaling_factor}")
    if kind == "deepseek_v2":
        return f"softmax, {getattr(config, 'topk_method', 'greedy')}, {config.n_group} groups, top-{config.topk_group} groups, top-{k}"
    renorm = True if kind == "mixtral" else bool(getattr(config, "norm_topk_prob", False))
    return f"softmax top-{k}" + (", renormalised" if renorm else "")


class GateRecorder:
    """Forward hooks on every gate: per routed layer, the batch's logits, top-k ids and weights."""

    def __init__(self, model, config):
        self.records, self.layers = {}, []
        self.k = config.num_experts_per_tok
        self.renormalise = config.model_type == "mixtral" or bool(getattr(config, "norm_topk_prob", False))
        for name, module in model.named_modules():
            if name.endswith("mlp.gate") or name.endswith("block_sparse_moe.gate"):
                layer = int(name.split(".layers.")[1].split(".")[0])
                self.layers.append(layer)
                module.register_forward_hook(self.hook(layer))
        if not self.layers:
            sys.exit("no MoE gate modules found (looked for *.mlp.gate and *.block_sparse_moe.gate)")
        self.layers.sort()

    def hook(self, layer):
        def record(module, inputs, output):
            if isinstance(output, tuple) and len(output) == 3 and output[0].is_floating_point():
                logits, weights, ids = output            # transformers ≥ 5: (router_logits, weights, indices)
            elif isinstance(output, tuple) and len(output) >= 2 and not output[0].is_floating_point():
                ids, weights, logits = output[0], output[1], None   # remote-code MoEGate: (idx, weight, aux)
            else:
                logits = output if torch.is_tensor(output) else output[0]   # a plain Linear gate
                probabilities = logits.float().softmax(-1)
                weights, ids = probabilities.topk(self.k, dim=-1)
                if self.renormalise:
                    weights = weights / weights.sum(-1, keepdim=True)
            # Highest weight first, as moescope orders a token's experts.
            order = weights.float().argsort(dim=-1, descending=True, stable=True)
            ids, weights = ids.gather(-1, order), weights.float().gather(-1, order)
            self.records[layer] = (None if logits is None else logits.detach().float().reshape(-1, logits.shape[-1]).cpu(),
                                   ids.detach().reshape(-1, self.k).cpu(), weights.detach().reshape(-1, self.k).cpu())
        return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--input", required=True, help="text file, or JSONL with text and domain fields")
    parser.add_argument("--out", required=True, help="trace file to write (.safetensors)")
    parser.add_argument("--lines", action="store_true", help="each non-empty line of a text file is a document")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device-map", default="auto", help='passed to from_pretrained ("auto" needs accelerate; "none": plain CPU)')
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per forward pass")
    parser.add_argument("--scores", default="logits", choices=["logits", "none"], help="store router logits [T, L, E]")
    parser.add_argument("--scores-dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--keep-parts", action="store_true", help="keep OUT.parts/ after joining")
    args = parser.parse_args()
    if not args.out.endswith(".safetensors"):
        sys.exit("--out must name a .safetensors file")

    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(args.model)
    tokenizer_file = os.path.join(args.model, "tokenizer.json")
    if os.path.isfile(tokenizer_file):
        from tokenizers import Tokenizer
        fast = Tokenizer.from_file(tokenizer_file)
        encode = lambda text: fast.encode(text).ids
    else:
        from transformers import AutoTokenizer
        auto = AutoTokenizer.from_pretrained(args.model)
        encode = lambda text: auto(text)["input_ids"]
        saved = args.out + ".tokenizer-folder"
        auto.save_pretrained(saved)
        tokenizer_file = os.path.join(saved, "tokenizer.json")
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    placement = {} if args.device_map == "none" else {"device_map": args.device_map}
    if placement and importlib.util.find_spec("accelerate") is None:
        sys.exit(f"--device-map {args.device_map} needs the accelerate package: pip install accelerate (or --device-map none for plain CPU)")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, **placement).eval()
    recorder = GateRecorder(model, config)
    layers, k = recorder.layers, recorder.k
    documents = read_documents(args.input, args.lines)

    parts = args.out + ".parts"
    os.makedirs(parts, exist_ok=True)
    progress_path = os.path.join(parts, "progress.json")
    progress = {"done": 0, "parts": []}
    if os.path.exists(progress_path):
        with open(progress_path) as f:
            progress = json.load(f)
        print(f"resuming: {progress['done']} of {len(documents)} documents already captured", file=sys.stderr)

    device = next(model.parameters()).device
    # One forward pass per window; windows of several documents share a batch.
    pending = []
    for index in range(progress["done"], len(documents)):
        ids = encode(documents[index][0])
        if not ids:
            sys.exit(f"document {index} encodes to no tokens")
        for start in range(0, len(ids), args.max_length):
            pending.append((index, ids[start:start + args.max_length]))

    def flush(batch, last_document):
        width = max(len(ids) for _, ids in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (_, ids) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        with torch.no_grad():
            model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
        keep = mask.reshape(-1).bool()    # the gate sees [batch × width] rows; padding is dropped
        tensors = {"token_ids": input_ids.reshape(-1)[keep].numpy().astype(np.int32),
                   "document": np.array([d for d, ids in batch for _ in ids], dtype=np.int64)}
        ids_per_layer, weights_per_layer, logits_per_layer = [], [], []
        for layer in layers:
            logits, chosen, weights = recorder.records[layer]
            ids_per_layer.append(chosen[keep].numpy().astype(np.int32))
            weights_per_layer.append(weights[keep].numpy().astype(np.float32))
            if args.scores == "logits" and logits is not None:
                logits_per_layer.append(logits[keep].numpy().astype(np.float32))
        tensors["topk_ids"] = np.stack(ids_per_layer, axis=1)
        tensors["topk_weights"] = np.stack(weights_per_layer, axis=1)
        if len(logits_per_layer) == len(layers):
            tensors["router_logits"] = np.stack(logits_per_layer, axis=1)
        name = f"part-{len(progress['parts']):06d}.safetensors"
        save_file(tensors, os.path.join(parts, name + ".tmp"))
        os.replace(os.path.join(parts, name + ".tmp"), os.path.join(parts, name))
        progress["parts"].append(name)
        progress["done"] = last_document + 1
        with open(progress_path + ".tmp", "w") as f:
            json.dump(progress, f)
        os.replace(progress_path + ".tmp", progress_path)

    # Batches end on document boundaries, so progress.json's count of documents done is exact.
    batch = []
    began, total_tokens, tokens_done = time.monotonic(), sum(len(ids) for _, ids in pending), 0
    for i, (document, ids) in enumerate(pending):
        tokens_done += len(ids)
        batch.append((document, ids))
        next_document = pending[i + 1][0] if i + 1 < len(pending) else None
        if len(batch) >= args.batch_size and next_document != document or next_document is None:
            flush(batch, document)
            batch = []
            rate = tokens_done / max(time.monotonic() - began, 1e-9)
            eta = (total_tokens - tokens_done) / rate
            print(f"\rcaptured {progress['done']}/{len(documents)} documents · {tokens_done}/{total_tokens} tokens · "
                  f"{rate:,.0f} tokens/s · ETA {int(eta) // 60}m{int(eta) % 60:02d}s ", end="", file=sys.stderr)
    print(file=sys.stderr)
    join(args, progress, parts, documents, layers, k, config, tokenizer_file)


def join(args, progress, parts, documents, layers, k, config, tokenizer_file):
    """Streams the parts into one trace file (header first, then each tensor part by part)."""
    opened = [safe_open(os.path.join(parts, name), "np") for name in progress["parts"]]
    if not opened:
        sys.exit("nothing captured")
    lengths = [f.get_slice("token_ids").get_shape()[0] for f in opened]
    total = sum(lengths)
    experts = config.num_local_experts if hasattr(config, "num_local_experts") else \
        getattr(config, "n_routed_experts", None) or config.num_experts
    has_logits = all("router_logits" in f.keys() for f in opened)
    document_tokens = np.zeros(len(documents), dtype=np.int64)
    for f in opened:
        np.add.at(document_tokens, f.get_tensor("document"), 1)
    offsets = np.concatenate([[0], np.cumsum(document_tokens[document_tokens > 0])]).astype(np.int64)
    domains = [documents[i][1] for i in range(len(documents)) if document_tokens[i] > 0]
    scores_dtype = {"float32": ("F32", np.float32), "float16": ("F16", np.float16), "bfloat16": ("BF16", None)}[args.scores_dtype]
    L = len(layers)
    plan = [("token_ids", "I32", [total], 4), ("document_offsets", "I64", [len(offsets)], 8),
            ("topk_ids", "I32", [total, L, k], 4), ("topk_weights", "F32", [total, L, k], 4)]
    if has_logits and args.scores == "logits":
        plan.append(("router_logits", scores_dtype[0], [total, L, experts], 4 if scores_dtype[0] == "F32" else 2))
    header, offset = {}, 0
    for name, dtype, shape, size in plan:
        length = int(np.prod(shape)) * size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    import transformers
    tokenizer_name = os.path.basename(args.out)[:-len(".safetensors")] + ".tokenizer.json"
    header["__metadata__"] = {
        "format": FORMAT, "version": str(VERSION), "family": config.model_type,
        "num_experts": str(experts), "top_k": str(k), "routed_layers": json.dumps(layers),
        "num_layers": str(config.num_hidden_layers), "routing_rule": routing_rule(config),
        "source": json.dumps({"engine": "transformers", "version": transformers.__version__, "torch": torch.__version__,
                              "model": args.model, "dtype": args.dtype, "max_length": str(args.max_length),
                              "device_map": args.device_map, "batch_size": str(args.batch_size)}),
        "domains": json.dumps(domains), "tokenizer_path": tokenizer_name,
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - (8 + len(raw)) % 8) % 8)
    temporary = args.out + ".tmp"
    with open(temporary, "wb") as out:
        out.write(len(raw).to_bytes(8, "little"))
        out.write(raw)
        for name, dtype, _, _ in plan:
            if name == "document_offsets":
                out.write(offsets.astype("<i8").tobytes())
                continue
            for f in opened:
                values = f.get_tensor(name)
                if name == "router_logits" and dtype == "BF16":
                    bits = np.ascontiguousarray(values.astype(np.float32)).view(np.uint32)
                    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
                    out.write(rounded.tobytes())
                elif name == "router_logits" and dtype == "F16":
                    out.write(values.astype("<f2").tobytes())
                else:
                    out.write(values.astype({"I32": "<i4", "F32": "<f4"}[dtype]).tobytes())
    os.replace(temporary, args.out)
    shutil.copyfile(tokenizer_file, os.path.join(os.path.dirname(os.path.abspath(args.out)), tokenizer_name))
    if not args.keep_parts:
        shutil.rmtree(parts)
    print(f"wrote {args.out}: {total} tokens × {L} layers × top-{k} of {experts} experts, {len(offsets) - 1} documents", file=sys.stderr)


if __name__ == "__main__":
    main()
