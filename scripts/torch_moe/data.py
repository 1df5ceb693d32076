"""The corpus's training stream and moescope's batch sampler (Sources/MoETraining)."""

import json
import os

import numpy as np

from .rng import SeededGenerator
from .tokenizer import Tokenizer


def load_documents(corpus_path: str, split: str = "train") -> list[str]:
    texts = []
    with open(corpus_path, "rb") as f:
        for number, line in enumerate(f.read().split(b"\n"), 1):
            if not line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                raise SystemExit(f"error: corpus {corpus_path} line {number} is not a valid document — rebuild it with scripts/build_corpus.py")
            if doc["split"] == split:
                texts.append(doc["text"])
    return texts


def token_stream(assets: str, tokenizer: Tokenizer, split: str = "train") -> np.ndarray:
    """Every document of `split`, tokenised and joined with <|endoftext|>, as moescope's
    `TokenStream` (a few seconds for the whole corpus; train.py caches it)."""
    ids: list[int] = []
    eot = tokenizer.end_of_text_id
    for text in load_documents(os.path.join(assets, "corpus", "corpus.jsonl"), split):
        ids += tokenizer.encode(text)
        if eot is not None:
            ids.append(eot)
    return np.asarray(ids, dtype=np.int64)


def batch_offsets(step: int, seed: int, batch_size: int, sequence_length: int, stream_length: int) -> list[int]:
    """Start offsets of the B windows of step `step` (0-based): `TokenStream.batch`'s draws."""
    generator = SeededGenerator(((seed * 0x2545F4914F6CDD1D) & ((1 << 64) - 1)) ^ step)
    span = stream_length - sequence_length - 1
    return [generator.next() % span for _ in range(batch_size)]


def batch(tokens: np.ndarray, step: int, seed: int, batch_size: int, sequence_length: int):
    """Inputs and targets [B × T] of step `step`, identical to moescope's."""
    starts = batch_offsets(step, seed, batch_size, sequence_length, len(tokens))
    windows = np.stack([tokens[s:s + sequence_length + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]
