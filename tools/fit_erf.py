"""Fits the coefficients of the double-precision erf/erfc that fastmlp's ONNX export
spells out of elementary operators for float64 gelu graphs (onnxruntime's CPU provider
has no double ``Erf``): see ``python/fastmlp/onnx_export.py``, ``_ERF_PIECES``.

With a = |x|:

* a < 0.5:  erf(a) = a·p(a²), p a polynomial in a² on [0, 0.25];
* 0.5 ≤ a < 8, on [0.5, 1], [1, 2], [2, 4], [4, 8]: erfcx(a) = e^(a²)·erfc(a) = p(s),
  s = (a − c)/h ∈ [−1, 1] (c the middle, h the half-width of the piece);
* a ≥ 8:  erfcx(a) = p(1/a²)/a, p a polynomial in v = 1/a² on [0, 1/64] (so it holds
  up to a = ∞; p(0) = 1/√π).

Each polynomial is the Chebyshev expansion of the function on its interval, computed
in 50-digit arithmetic (mpmath) from 64 Chebyshev nodes, truncated where the
coefficients fall below 2^-58 of the function's size (near-minimax), converted to
powers of the variable in 50 digits and rounded to double. The script then evaluates
the pieces in numpy double, as the graph does (Horner; e^(−a²) from a split of a into
a 24-bit head and its tail, so a² is exact), and prints the largest error against
mpmath on a dense sweep: relative for erf on [0, 0.5] and erfc on [0.5, 26.5] (below
that erfc is subnormal), absolute for erf everywhere.

Run: ``pip install mpmath`` then ``python tools/fit_erf.py`` (prints the table to
paste into onnx_export.py; a few seconds).
"""

from __future__ import annotations

import mpmath
import numpy as np

mpmath.mp.dps = 50
NODES = 64
TRUNCATE = mpmath.mpf(2) ** -58

# (name, variable's interval, the function of the variable)
SMALL_END = 0.5  # erf(a) = a·p(a²) below, erfc(a) = e^(−a²)·erfcx(a) above
TAIL_START = 8.0
MIDDLE = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]


def erfcx(a):
    return mpmath.exp(a * a) * mpmath.erfc(a)


def chebyshev_fit(function, low, high):
    """Coefficients c_k of Σ c_k T_k(s), s ∈ [−1, 1] mapping to [low, high], in mp."""
    low, high = mpmath.mpf(low), mpmath.mpf(high)
    thetas = [mpmath.pi * (j + mpmath.mpf(1) / 2) / NODES for j in range(NODES)]
    values = [function((high + low) / 2 + (high - low) / 2 * mpmath.cos(theta)) for theta in thetas]
    coefficients = []
    for k in range(NODES):
        total = mpmath.fsum(value * mpmath.cos(k * theta) for value, theta in zip(values, thetas))
        coefficients.append(total * 2 / NODES)
    coefficients[0] /= 2
    scale = max(abs(value) for value in values)
    last = max(k for k, c in enumerate(coefficients) if abs(c) > TRUNCATE * scale)
    return coefficients[: last + 1]


def to_powers(chebyshev, low, high, variable_is_s: bool):
    """Σ c_k T_k(s) as powers of s (variable_is_s) or of the original variable x,
    s = (2x − low − high)/(high − low); highest power first, in mp."""
    n = len(chebyshev)
    # T_k as power coefficients in s (lowest first)
    t_prev, t = [mpmath.mpf(1)], [mpmath.mpf(0), mpmath.mpf(1)]
    total = [mpmath.mpf(0)] * n
    for k, c in enumerate(chebyshev):
        if k == 0:
            poly = t_prev
        elif k == 1:
            poly = t
        else:
            nxt = [mpmath.mpf(0)] + [2 * v for v in t]
            for i, v in enumerate(t_prev):
                nxt[i] -= v
            t_prev, t = t, nxt
            poly = t
        for i, v in enumerate(poly):
            total[i] += c * v
    if not variable_is_s:  # substitute s = α·x + β
        alpha = 2 / (mpmath.mpf(high) - mpmath.mpf(low))
        beta = -(mpmath.mpf(high) + mpmath.mpf(low)) / (mpmath.mpf(high) - mpmath.mpf(low))
        result = [mpmath.mpf(0)] * n
        power = [mpmath.mpf(1)]  # (α x + β)^i, lowest first
        for i in range(n):
            for j, v in enumerate(power):
                result[j] += total[i] * v
            power = [beta * power[0]] + [alpha * power[j - 1] + beta * (power[j] if j < len(power) else 0)
                                         for j in range(1, len(power) + 1)]
        total = result
    return [float(v) for v in reversed(total)]


def horner(coefficients, x):
    result = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        result = result * x + c
    return result


def fit():
    pieces = {"small": to_powers(chebyshev_fit(lambda t: mpmath.erf(mpmath.sqrt(t)) / mpmath.sqrt(t)
                                               if t > 0 else 2 / mpmath.sqrt(mpmath.pi), 0, SMALL_END**2),
                                 0, SMALL_END**2, variable_is_s=False)}
    pieces["middle"] = []
    for low, high in MIDDLE:
        coefficients = to_powers(chebyshev_fit(erfcx, low, high), low, high, variable_is_s=True)
        pieces["middle"].append(((low + high) / 2, (high - low) / 2, coefficients))
    pieces["tail"] = to_powers(chebyshev_fit(lambda v: erfcx(1 / mpmath.sqrt(v)) / mpmath.sqrt(v) if v > 0
                                             else 1 / mpmath.sqrt(mpmath.pi), 0, 1 / TAIL_START**2),
                               0, 1 / TAIL_START**2, variable_is_s=False)
    return pieces


def exp_minus_square_parts(a):
    """e^(−a²) as (e^(−h²), e^(−l·(a + h))): h = a rounded to float (24 bits, so h² is
    exact), l = a − h."""
    head = a.astype(np.float32).astype(np.float64)
    tail = a - head
    return np.exp(-head * head), np.exp(-tail * (a + head))


def evaluate(pieces, a):
    """(erf(a), erfc(a)) for a ≥ 0 in double, as the ONNX graph computes them."""
    small = np.minimum(a, SMALL_END)
    erf_small = small * horner(pieces["small"], small * small)
    clamped = np.minimum(a, 30.0)
    scaled = horner(pieces["tail"], 1 / (np.maximum(clamped, TAIL_START) ** 2)) / np.maximum(clamped, TAIL_START)
    for (centre, half, coefficients), (low, high) in reversed(list(zip(pieces["middle"], MIDDLE))):
        s = (np.clip(a, low, high) - centre) / half
        scaled = np.where(a < high, horner(coefficients, s), scaled)
    head_exp, rest_exp = exp_minus_square_parts(clamped)
    erfc_large = (scaled * rest_exp) * head_exp  # the small factor last: one rounding into subnormals
    erf = np.where(a < SMALL_END, erf_small, 1 - erfc_large)
    erfc = np.where(a < SMALL_END, 1 - erf_small, erfc_large)
    return erf, erfc


def measure(pieces):
    a = np.concatenate([np.linspace(0, 27, 200_001), np.geomspace(1e-300, 0.5, 2001)])
    erf, erfc = evaluate(pieces, a)
    want_erf = np.array([float(mpmath.erf(mpmath.mpf(v))) for v in a])
    want_erfc = np.array([float(mpmath.erfc(mpmath.mpf(v))) for v in a])
    small = a < SMALL_END
    normal = (a >= SMALL_END) & (want_erfc >= 2.2250738585072014e-308)
    return {
        "erf relative, a < 0.5": float(np.max(np.abs(erf[small] - want_erf[small]) / want_erf[small].clip(1e-320))),
        "erfc relative, 0.5 <= a <= 26.5": float(np.max(np.abs(erfc[normal] - want_erfc[normal]) / want_erfc[normal])),
        "erf absolute": float(np.max(np.abs(erf - want_erf))),
        "erfc absolute": float(np.max(np.abs(erfc - want_erfc))),
    }


def main():
    pieces = fit()
    print("_ERF_SMALL =", pieces["small"])
    print("_ERFCX_MIDDLE = [")
    for centre, half, coefficients in pieces["middle"]:
        print(f"    ({centre!r}, {half!r}, {coefficients}),")
    print("]")
    print("_ERFCX_TAIL =", pieces["tail"])
    print("degrees:", len(pieces["small"]) - 1, [len(c) - 1 for _, _, c in pieces["middle"]], len(pieces["tail"]) - 1)
    for what, error in measure(pieces).items():
        print(f"max error, {what}: {error:.3g}")


if __name__ == "__main__":
    main()
