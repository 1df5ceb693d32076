#!/usr/bin/env python3
"""Tiny random Hugging Face MoE models and their reference outputs, for moescope's parity tests.

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors tokenizers
    .venv/bin/python scripts/make_hf_fixtures.py          # writes Tests/Fixtures/hf/<family>/

Not part of the tests: the tests read only what this writes (a few hundred KB in all). Each
family gets config.json, weights, tokenizer.json and reference.safetensors holding the input
ids, the logits, and every layer's router logits and top-k choices as transformers computes
them. The families vary what the loader must handle: fused expert tensors (mixtral), a
sharded index with a shared expert (qwen2_moe), f16 weights with per-head q/k norm
(qwen3_moe), bf16 weights with whole-projection q/k norm (olmoe), and an OLMoE with 64 experts
(olmoe_64e) so the explorer's tests open a Hub model at a real expert count.

    .venv/bin/python scripts/make_hf_fixtures.py --only olmoe_64e     # one family
    .venv/bin/python scripts/make_hf_fixtures.py --shapes /work/models  # real-shape folders

`--shapes DIR` writes tiny-width random models with the expert and layer counts of OLMoE,
Qwen1.5-MoE, Qwen3-MoE and DeepSeek-V3 (no references; for opening in the explorer by hand,
not committed).
"""
import json, os, shutil, sys
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "hf")
# "ß" and the emoji are outside every fixture vocabulary: byte-level BPE spells them in bytes,
# the SentencePiece-style tokenizer falls back to its <0xXX> tokens.
TEXT = "Routers pick experts: über 42 tokens, naïve café — and 'quotes' too!\n  def f(x): return x*2<|endoftext|>It's 2026. Straße 🙂"
VOCAB = 320
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False)
FAMILIES = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=16, rope_theta=1e6),
    "qwen2_moe": dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16, intermediate_size=24,
                      shared_expert_intermediate_size=24, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, intermediate_size=24,
                      norm_topk_prob=True, head_dim=12, decoder_sparse_step=1, mlp_only_layers=[]),
    "olmoe": dict(num_experts=8, num_experts_per_tok=3, intermediate_size=16, norm_topk_prob=False, clip_qkv=2.0),
    # MLA with a low-rank query and YaRN RoPE, sigmoid scores with a selection bias,
    # group-limited top-k, routed scaling, a shared expert and a dense first layer.
    "deepseek_v3": dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, intermediate_size=24,
                        n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2, norm_topk_prob=True,
                        routed_scaling_factor=2.5, q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4,
                        qk_nope_head_dim=8, v_head_dim=8, num_hidden_layers=3, rope_interleave=True, num_key_value_heads=4,
                        # YaRN, as DeepSeek's published checkpoints use it (extended 4x from 32 positions).
                        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32,
                                             beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0)),
    # MLA with a full-rank query, softmax scores, group-limited greedy top-k.
    "deepseek_v2": dict(n_routed_experts=6, num_experts_per_tok=2, moe_intermediate_size=16, intermediate_size=24,
                        n_shared_experts=2, first_k_dense_replace=1, n_group=3, topk_group=2, topk_method="group_limited_greedy",
                        routed_scaling_factor=1.5, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=4,
                        qk_nope_head_dim=8, v_head_dim=8, num_hidden_layers=3, num_key_value_heads=4),
    # OLMoE-1B-7B's expert count and top-k at a tiny width: the explorer's Hub-path shape test.
    "olmoe_64e": dict(num_experts=64, num_experts_per_tok=8, intermediate_size=8, hidden_size=16, num_attention_heads=2,
                      num_key_value_heads=2, num_hidden_layers=4, norm_topk_prob=False),
}
# Folder name → transformers model type, where they differ.
MODEL_TYPES = {"olmoe_64e": "olmoe"}
# Real models' expert and layer counts at a tiny width (see --shapes).
TINY = dict(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, intermediate_size=8)
SHAPES = {
    "olmoe-64e-16L": ("olmoe", dict(TINY, num_experts=64, num_experts_per_tok=8, num_hidden_layers=16, norm_topk_prob=False)),
    "qwen2moe-60e-24L": ("qwen2_moe", dict(TINY, num_experts=60, num_experts_per_tok=4, moe_intermediate_size=8,
                                           shared_expert_intermediate_size=16, num_hidden_layers=24, norm_topk_prob=False,
                                           decoder_sparse_step=1, mlp_only_layers=[])),
    "qwen3moe-128e-48L": ("qwen3_moe", dict(TINY, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=8, head_dim=8,
                                            num_hidden_layers=48, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])),
    "deepseekv3-256e-61L": ("deepseek_v3", dict(TINY, n_routed_experts=256, num_experts_per_tok=8, moe_intermediate_size=8,
                                                n_shared_experts=1, first_k_dense_replace=3, n_group=8, topk_group=4,
                                                norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=16, kv_lora_rank=8,
                                                qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=4, num_hidden_layers=61,
                                                rope_interleave=True)),
}
DTYPES = {"olmoe_64e": torch.bfloat16, "deepseek_v3": torch.bfloat16, "deepseek_v2": torch.float32, "mixtral": torch.float32, "qwen2_moe": torch.float32, "qwen3_moe": torch.float16, "olmoe": torch.bfloat16}


# Qwen2's pre-tokenizer: its own split regex, then byte-level without GPT-2's regex, after NFC.
QWEN_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def sentencepiece_tokenizer():
    """Mixtral/Llama style: ▁ for spaces, BPE over characters, bytes as <0xXX> tokens for
    characters outside the vocabulary, <s> prepended by the post-processor."""
    corpus = [TEXT.split("<|endoftext|>")[0], "the router routes tokens to experts", "café naïve", "def return x y z"] * 20
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer_tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=VOCAB - 256, special_tokens=["<unk>", "<s>", "</s>", "<|endoftext|>"],
                                                                 show_progress=False))
    model = json.loads(trainer_tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<|endoftext|>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return tok


def tokenizer(style):
    if style == "sentencepiece":
        return sentencepiece_tokenizer()
    tok = Tokenizer(models.BPE())
    if style == "qwen":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [TEXT, "the router routes tokens to experts", "café naïve über", "def return x y z", "  spaces\n\nlines"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        special_tokens=["<|endoftext|>"], show_progress=False))
    return tok


def write_shapes(folder):
    """Tiny-width random models of real expert/layer counts, bf16, for opening by hand."""
    for name, (model_type, extra) in SHAPES.items():
        torch.manual_seed(sum(map(ord, name)))
        config = AutoConfig.for_model(model_type, **{**COMMON, **extra})
        model = AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.3) if p.dim() > 1 else p.uniform_(0.5, 1.5)
        out = os.path.join(folder, name)
        shutil.rmtree(out, ignore_errors=True)
        model.to(torch.bfloat16).save_pretrained(out)
        tokenizer("qwen" if model_type.startswith("qwen") else "gpt2").save(os.path.join(out, "tokenizer.json"))
        print(name, "->", out)


def main():
    args = sys.argv[1:]
    if args[:1] == ["--shapes"] and len(args) == 2:
        return write_shapes(args[1])
    only = set(args[1:]) if args[:1] == ["--only"] else None
    for family, extra in FAMILIES.items():
        if only is not None and family not in only:
            continue
        tok = tokenizer("qwen" if family.startswith("qwen") else "sentencepiece" if family == "mixtral" else "gpt2")
        ids = tok.encode(TEXT).ids
        torch.manual_seed(sum(map(ord, family)))
        config = AutoConfig.for_model(MODEL_TYPES.get(family, family), **{**COMMON, **extra})
        model = AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():   # larger weights than the 0.02 init, so routing and logits are not near-ties
            for p in model.parameters():
                p.normal_(0, 0.3) if p.dim() > 1 else p.uniform_(0.5, 1.5)
            for name, b in model.named_buffers():
                if "e_score_correction_bias" in name:
                    b.normal_(0, 0.1)   # the selection bias moves choices away from the plain top-k
            # Round to the stored precision, so the reference is what moescope will read.
            for p in model.parameters():
                p.copy_(p.to(DTYPES[family]).float())
        captured = {}
        def hook(name):
            def record(module, inputs, output):
                logits, _, indices = output
                captured[name] = (logits.detach().float().clone(), indices.detach().clone())
            return record
        for name, module in model.named_modules():
            if name.endswith("mlp.gate") or name.endswith("block_sparse_moe.gate"):
                module.register_forward_hook(hook(name))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        out = os.path.join(OUT, family)
        shutil.rmtree(out, ignore_errors=True)
        if family == "mixtral":
            # transformers' own in-memory layout: fused gate_up_proj / down_proj per layer.
            os.makedirs(out)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
            config.save_pretrained(out)
        else:
            model.to(DTYPES[family]).save_pretrained(out, max_shard_size="60KB" if family == "qwen2_moe" else "50MB")
        tok.save(os.path.join(out, "tokenizer.json"))
        # Integers stored as F32 (exact at these sizes), the dtypes moescope reads.
        reference = {"input_ids": torch.tensor(ids, dtype=torch.float32), "logits": logits}
        layers = sorted(captured, key=lambda n: int(n.split(".")[2]))
        for i, name in enumerate(layers):
            reference[f"router_logits.{i}"] = captured[name][0]
            reference[f"top_k.{i}"] = captured[name][1].to(torch.float32)
        save_file(reference, os.path.join(out, "reference.safetensors"), metadata={"text": TEXT, "transformers": __import__("transformers").__version__})
        print(family, "->", out, sorted(os.listdir(out)))


if __name__ == "__main__":
    sys.exit(main())
