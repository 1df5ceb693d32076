"""moescope's seeded generator (SplitMix64 + Box–Muller), so both trainers start from the same
weights and draw the same batches for a seed.

Mirrors `SeededGenerator` in Sources/MoECore/Tensor.swift: state starts at seed + γ, each draw
adds γ and mixes; a uniform is the top 24 bits; normals come in Box–Muller pairs (cos first,
the sin kept for the next call), so a run of normals is one continuous stream across tensors.
"""

import math

import numpy as np

GAMMA = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def _mix(z):
    """SplitMix64's finaliser on a uint64 array (numpy wraps on overflow, as Swift's &* does)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class SeededGenerator:
    """Scalar form, for the few draws the hash router and the batch sampler make."""

    def __init__(self, seed: int):
        self.state = (seed + GAMMA) & MASK

    def next(self) -> int:
        self.state = (self.state + GAMMA) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def raw_draws(seed: int, start: int, count: int) -> np.ndarray:
    """Draws start+1 … start+count of the generator seeded with `seed`, vectorised."""
    n = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        state = np.uint64((seed + GAMMA) & MASK) + n * np.uint64(GAMMA)
    return _mix(state)


def normal_range(seed: int, start: int, count: int) -> np.ndarray:
    """Values start … start+count−1 of the `nextNormal()` stream (float32), as Swift computes
    them: glibc's logf/sinf/cosf are correctly rounded, which float64 followed by rounding
    reproduces. Normal i comes from draws 2⌊i/2⌋+1 and 2⌊i/2⌋+2 (cos for even i, sin for odd)."""
    first, last = start // 2, (start + count + 1) // 2
    draws = raw_draws(seed, 2 * first, 2 * (last - first))
    uniform = (draws >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    u1 = np.maximum(uniform[0::2], np.float32(1e-7))
    u2 = uniform[1::2]
    log_u1 = np.log(u1.astype(np.float64)).astype(np.float32)
    radius = np.sqrt(np.float32(-2) * log_u1)   # float32, correctly rounded
    angle = (np.float32(2) * np.float32(math.pi)) * u2   # Float.pi·2·u2 in float32
    out = np.empty(2 * (last - first), dtype=np.float32)
    out[0::2] = radius * np.cos(angle.astype(np.float64)).astype(np.float32)
    out[1::2] = radius * np.sin(angle.astype(np.float64)).astype(np.float32)
    return out[start - 2 * first:start - 2 * first + count]
