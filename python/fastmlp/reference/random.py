"""The twin of cpp/include/fastmlp/random.hpp: the generator each network owns."""

from __future__ import annotations

import math
import operator

_MASK64 = (1 << 64) - 1


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & _MASK64


class Rng:
    """cpp/include/fastmlp/random.hpp's generator, value for value: xoshiro256**
    (Blackman & Vigna) seeded through splitmix64, on Python ints masked to 64 bits.

    The seed is taken modulo 2⁶⁴, as the C++ conversion to uint64 does.
    """

    def __init__(self, seed=0):
        self.reseed(seed)

    def reseed(self, seed):
        x = operator.index(seed) & _MASK64
        state = []
        for _ in range(4):  # splitmix64
            x = (x + 0x9E3779B97F4A7C15) & _MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            state.append(z ^ (z >> 31))
        self._state = state
        self._spare = 0.0
        self._has_spare = False

    def next(self) -> int:
        """The next 64-bit value: rotl(s1 · 5, 7) · 9, then the xoshiro256 state step."""
        s = self._state
        result = (_rotl((s[1] * 5) & _MASK64, 7) * 9) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def uniform(self) -> float:
        """Uniform in [0, 1): the top 53 bits of next() times 2⁻⁵³."""
        return float(self.next() >> 11) * 2.0**-53

    def below(self, bound) -> int:
        """Uniform integer in [0, bound), 1 ≤ bound < 2⁶⁴, without modulo bias (Lemire 2019):
        the high word of next() · bound, redrawn while the low word is below (2⁶⁴ − bound) mod bound."""
        bound = operator.index(bound)
        if not 1 <= bound <= _MASK64:
            raise ValueError(f"below: bound must be in [1, 2**64); got {bound}")
        product = self.next() * bound
        if product & _MASK64 < bound:
            threshold = ((1 << 64) - bound) % bound
            while product & _MASK64 < threshold:
                product = self.next() * bound
        return product >> 64

    def normal(self) -> float:
        """Standard normal, Box–Muller: u1 = uniform() redrawn while 0, u2 = uniform(),
        r = √(−2 ln u1), θ = 2π u2; returns r cos θ and keeps r sin θ for the next call."""
        if self._has_spare:
            self._has_spare = False
            return self._spare
        u1 = self.uniform()
        while u1 <= 0.0:
            u1 = self.uniform()
        u2 = self.uniform()
        radius = math.sqrt(-2.0 * math.log(u1))
        angle = 6.283185307179586477 * u2
        self._spare = radius * math.sin(angle)
        self._has_spare = True
        return radius * math.cos(angle)

    def state(self):
        """The whole state, ``((w0, w1, w2, w3), has_spare, spare)``: the engine's
        generator state in the same form (``Rng::state``)."""
        return tuple(self._state), self._has_spare, self._spare

    def set_state(self, words, has_spare, spare):
        """Sets the whole state, as :meth:`state` gives it (``Rng::set_state``); four words
        in [0, 2⁶⁴), not all zero (xoshiro's one fixed point)."""
        words = [operator.index(w) for w in words]
        if len(words) != 4 or not all(0 <= w <= _MASK64 for w in words):
            raise ValueError(f"words: expected four integers in [0, 2**64); got {words}")
        if not any(words):
            raise ValueError("words: the all-zero state is xoshiro's fixed point; expected a nonzero word")
        self._state = words
        self._has_spare = bool(has_spare)
        self._spare = float(spare)
