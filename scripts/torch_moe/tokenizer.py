"""moescope's byte-level BPE (Sources/MoECore/Tokenizer.swift), read from the same
tokenizer.json, so the PyTorch trainer sees exactly the token ids moescope's does."""

import json
import unicodedata

# Unicode White_Space (what Swift's `properties.isWhitespace` tests).
WHITE_SPACE = set(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                            0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))
LETTER, DIGIT, SPACE, NEWLINE, OTHER = range(5)


def character_class(ch: str) -> int:
    if ch in "\n\r":
        return NEWLINE
    if ch in WHITE_SPACE:
        return SPACE
    if "0" <= ch <= "9":
        return DIGIT
    category = unicodedata.category(ch)
    # Swift: Alphabetic or a nonspacing mark. Alphabetic = letters, letter numbers and
    # Other_Alphabetic (mostly spacing marks, and the circled letters).
    if category[0] == "L" or category in ("Nl", "Mn", "Mc") or 0x24B6 <= ord(ch) <= 0x24E9:
        return LETTER
    return OTHER


def chunks(text: str) -> list[str]:
    """Word-like chunks BPE merges inside, as `Tokenizer.chunks` cuts them."""
    out, i, n = [], 0, len(text)
    classes = [character_class(c) for c in text]
    while i < n:
        start = i
        kind = classes[i]
        if kind == SPACE and text[i] == " " and i + 1 < n and classes[i + 1] not in (SPACE, NEWLINE):
            i += 1
            kind = classes[i]
        end, length = i + 1, 1
        while end < n and classes[end] == kind and kind != NEWLINE and not (kind == DIGIT and length == 3):
            if kind == SPACE and text[end] == " " and end + 1 < n and classes[end + 1] not in (SPACE, NEWLINE):
                break
            end += 1
            length += 1
        out.append(text[start:end])
        i = end
    return out


class Tokenizer:
    END_OF_TEXT = "<|endoftext|>"

    def __init__(self, merges: list[tuple[int, int]], special_tokens: list[str]):
        self.merges = merges
        self.special_tokens = special_tokens
        self.rank = {pair: r for r, pair in enumerate(merges)}
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != "moescope-byte-bpe":
            raise ValueError(f"{path}: not a moescope-byte-bpe tokenizer file")
        return cls([tuple(m) for m in data["merges"]], data["special_tokens"])

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special_tokens)

    @property
    def end_of_text_id(self):
        if self.END_OF_TEXT not in self.special_tokens:
            return None
        return 256 + len(self.merges) + self.special_tokens.index(self.END_OF_TEXT)

    def encode_chunk(self, data: bytes) -> list[int]:
        ids = list(data)
        while len(ids) > 1:
            best = min((self.rank.get((a, b), 1 << 62), i) for i, (a, b) in enumerate(zip(ids, ids[1:])))
            if best[0] == 1 << 62:
                break
            pair, merged = self.merges[best[0]], 256 + best[0]
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(merged)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def encode(self, text: str) -> list[int]:
        ids = []
        for chunk in chunks(text):
            known = self.cache.get(chunk)
            if known is None:
                known = self.cache[chunk] = self.encode_chunk(chunk.encode("utf-8"))
            ids += known
        return ids
