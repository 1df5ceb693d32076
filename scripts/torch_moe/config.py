"""moescope's config.json (Sources/MoECore/ModelConfig.swift): the same fields, the same defaults."""

import dataclasses
import json

ROUTERS = ("linear", "mlp", "attention", "hybrid", "hash", "mlp-hadamard", "gru")

# JSON name → (attribute, default). Fields after `router_type` may be absent, as in moescope.
FIELDS = {
    "vocab_size": ("vocab_size", 1024), "hidden_size": ("hidden_size", 128),
    "num_hidden_layers": ("num_layers", 6), "num_attention_heads": ("num_heads", 4),
    "intermediate_size": ("expert_hidden_size", 256), "num_local_experts": ("num_experts", 8),
    "num_experts_per_tok": ("top_k", 2), "max_position_embeddings": ("context_length", 256),
    "router_type": ("router", "linear"), "router_hidden_size": ("router_hidden_size", 64),
    "gru_hidden_size": ("gru_hidden_size", 64), "rope_theta": ("rope_theta", 10000.0),
    "rms_norm_eps": ("norm_epsilon", 1e-5), "tie_word_embeddings": ("tie_embeddings", True),
    "initializer_range": ("init_std", 0.02),
}
REQUIRED = list(FIELDS)[:9]


@dataclasses.dataclass
class ModelConfig:
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    expert_hidden_size: int = 256
    num_experts: int = 8
    top_k: int = 2
    context_length: int = 256
    router: str = "linear"
    router_hidden_size: int = 64
    gru_hidden_size: int = 64
    rope_theta: float = 10000.0
    norm_epsilon: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate(self, path: str = "config") -> "ModelConfig":
        def fail(detail):
            raise ValueError(f"{path}: {detail}")
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "num_local_experts", "num_experts_per_tok", "max_position_embeddings", "router_hidden_size",
                    "gru_hidden_size"):
            value = getattr(self, FIELDS[key][0])
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(f"{key} must be a positive integer, got {value!r}")
        if self.router not in ROUTERS:
            fail(f"router_type {self.router!r} is not one of {', '.join(ROUTERS)}")
        if self.hidden_size % self.num_heads:
            fail(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_heads}")
        if self.head_dim % 2:
            fail(f"head dimension {self.head_dim} must be even for RoPE")
        if self.top_k > self.num_experts:
            fail(f"num_experts_per_tok {self.top_k} exceeds num_local_experts {self.num_experts}")
        if self.vocab_size <= 256:
            fail(f"vocab_size {self.vocab_size} must exceed the 256 byte tokens")
        return self

    def to_json(self) -> str:
        """Sorted keys, two-space indent: the bytes moescope's encoder writes (up to number style)."""
        data = {key: getattr(self, attr) for key, (attr, _) in FIELDS.items()}
        return json.dumps(dict(sorted(data.items())), indent=2, separators=(",", " : "))

    @classmethod
    def from_dict(cls, data: dict, path: str = "config") -> "ModelConfig":
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise ValueError(f"{path}: missing field {missing[0]}")
        kwargs = {attr: data.get(key, default) for key, (attr, default) in FIELDS.items()}
        kwargs["rope_theta"], kwargs["norm_epsilon"], kwargs["init_std"] = (
            float(kwargs["rope_theta"]), float(kwargs["norm_epsilon"]), float(kwargs["init_std"]))
        return cls(**kwargs).validate(path)

    @classmethod
    def load(cls, path: str) -> "ModelConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read a JSON config ({error})")
        return cls.from_dict(data, path)

    @classmethod
    def tiny(cls, router: str = "linear") -> "ModelConfig":
        """`ModelConfig.tiny` of the Swift tests."""
        return cls(vocab_size=300, hidden_size=32, num_layers=3, num_heads=2, expert_hidden_size=48, num_experts=4,
                   top_k=2, context_length=64, router_hidden_size=16, gru_hidden_size=12, router=router)
