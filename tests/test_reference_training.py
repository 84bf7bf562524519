"""The NumPy twins of training in fastmlp.reference, held to independent computations.

- losses (mse, cross_entropy, binary_cross_entropy, huber): direct formulas, hand-worked
  cases, central finite differences in float64, and torch.nn.functional when importable;
- gradient preprocessing (grad_norm, clip_scale): closed forms, and torch's clipping;
- optimizers (sgd_step, adam_step, lamb_step, Optimizer): hand-computed first steps,
  a pure-Python LAMB, and torch.optim over several steps when importable;
- schedules (schedule_factor): values at chosen steps, warm-up boundaries included;
- Rng: the values cpp/include/fastmlp/random.hpp prints (a throwaway C++ program,
  compiled with g++ -O2, printed them; they are constants here);
- init_params / resolve_init: layout, the random stream, each scheme's statistics;
- reference.Network with each loss: gradients vs finite differences; fit with an Optimizer.

torch is optional (pytest.importorskip): CI has none, and every torch check has a
torch-free counterpart.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import reference

FD_STEP = 1e-6
FD_TOLERANCE = 1e-7  # max |analytic − central difference| in float64


def assert_close(actual, expected, *, rtol, atol=0.0, what="result"):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def central_differences(f, x, h=FD_STEP):
    """(f(x + h e_i) − f(x − h e_i)) / 2h for every index i of the float64 array x (restored after)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + h
        plus = f(x)
        x[index] = saved - h
        minus = f(x)
        x[index] = saved
        grad[index] = (plus - minus) / (2 * h)
    return grad


def loss_case(name, shape, seed=0):
    """(pred, target, delta) in float64 suited to the loss; Huber's residuals kept away from its kinks."""
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal(shape) * 2
    delta = 1.0
    if name == "mse":
        target = rng.standard_normal(shape)
    elif name == "cross_entropy":  # non-negative rows that do not sum to 1: the general gradient
        target = rng.uniform(0, 1, shape) * rng.uniform(0.5, 2.0, (shape[0], 1))
    elif name == "binary_cross_entropy":
        target = rng.uniform(0, 1, shape)
    else:  # huber, δ = 0.7: residuals on both sides of δ, at least 0.05 from ±δ
        delta = 0.7
        magnitude = np.where(rng.uniform(size=shape) < 0.5, rng.uniform(0, 0.65, shape), rng.uniform(0.75, 3, shape))
        target = pred - magnitude * rng.choice([-1.0, 1.0], shape)
    return pred, target, delta


# ---- losses: values ------------------------------------------------------------------------------


def direct_loss(name, pred, target, delta=1.0):
    """The loss from its textbook formula, element by element in Python floats (no log-sum-exp,
    no logits trick: for moderate values only)."""
    B, O = pred.shape
    if name == "mse":
        return sum((p - t) ** 2 for p, t in zip(pred.ravel(), target.ravel())) / (B * O)
    if name == "cross_entropy":
        total = 0.0
        for row_p, row_t in zip(pred, target):
            z = sum(math.exp(p) for p in row_p)
            total -= sum(t * math.log(math.exp(p) / z) for p, t in zip(row_p, row_t))
        return total / B
    if name == "binary_cross_entropy":
        total = 0.0
        for p, t in zip(pred.ravel(), target.ravel()):
            s = 1 / (1 + math.exp(-p))
            total -= t * math.log(s) + (1 - t) * math.log(1 - s)
        return total / (B * O)
    total = 0.0
    for p, t in zip(pred.ravel(), target.ravel()):
        d = abs(p - t)
        total += 0.5 * d * d if d <= delta else delta * (d - delta / 2)
    return total / (B * O)


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (3, 1), (7, 33), (33, 7)])
@pytest.mark.parametrize("name", reference.LOSSES)
def test_loss_forward_matches_the_direct_formula(name, shape):
    pred, target, delta = loss_case(name, shape, seed=shape[0] * 100 + shape[1])
    expected = direct_loss(name, pred, target, delta)
    assert reference.loss_forward(name, pred, target, delta) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_loss_forward_hand_worked_cases():
    # mse: differences 1, 0, 0, −2 → (1 + 0 + 0 + 4) / 4
    assert reference.loss_forward("mse", [[1.0, 2.0], [3.0, 4.0]], [[0.0, 2.0], [3.0, 6.0]]) == 1.25
    # cross-entropy: softmax(0, ln 3) = (1/4, 3/4), target class 1 → −ln(3/4)
    ce = reference.loss_forward("cross_entropy", np.array([[0.0, math.log(3.0)]]), [[0.0, 1.0]])
    assert ce == pytest.approx(math.log(4 / 3), rel=1e-15)
    # two rows, the mean over rows: −ln(1/2) twice (equal logits) and 0 (zero target)
    ce2 = reference.loss_forward("cross_entropy", [[5.0, 5.0], [1.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]])
    assert ce2 == pytest.approx(math.log(2) / 2, rel=1e-15)
    # binary cross-entropy at logit 0: ln 2 for any target
    assert reference.loss_forward("binary_cross_entropy", [[0.0, 0.0]], [[1.0, 0.3]]) == pytest.approx(math.log(2))
    # huber, δ = 1: d = 0.5, 2, −3 → 0.125, 1.5, 2.5
    huber = reference.loss_forward("huber", [[0.5, 2.0, -3.0]], [[0.0, 0.0, 0.0]], delta=1.0)
    assert huber == pytest.approx(4.125 / 3, rel=1e-15)
    # huber, δ = 2: |d| = 2 is still quadratic
    assert reference.loss_forward("huber", [[2.0]], [[0.0]], delta=2.0) == 2.0


@pytest.mark.parametrize("name", reference.LOSSES)
def test_loss_value_and_gradient_match_torch(name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    pred, target, delta = loss_case(name, (6, 5), seed=3)
    p = torch.tensor(pred, requires_grad=True)
    t = torch.tensor(target)
    if name == "mse":
        loss = F.mse_loss(p, t)
    elif name == "cross_entropy":
        loss = F.cross_entropy(p, t)  # probability targets: −Σ t log_softmax, mean over rows
    elif name == "binary_cross_entropy":
        loss = F.binary_cross_entropy_with_logits(p, t)
    else:
        loss = F.huber_loss(p, t, delta=delta)
    loss.backward()
    assert reference.loss_forward(name, pred, target, delta) == pytest.approx(loss.item(), rel=1e-12)
    assert_close(reference.loss_backward(name, pred, target, delta), p.grad.numpy(), rtol=1e-12, atol=1e-15,
                 what=f"{name} gradient vs torch")


# ---- losses: gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 3), (3, 33), (33, 3)])
@pytest.mark.parametrize("name", reference.LOSSES)
def test_loss_backward_matches_finite_differences(name, shape):
    pred, target, delta = loss_case(name, shape, seed=shape[0] * 7 + shape[1])
    analytic = reference.loss_backward(name, pred, target, delta)
    assert analytic.dtype == np.float64 and analytic.shape == shape
    numeric = central_differences(lambda p: reference.loss_forward(name, p, target, delta), pred.copy())
    assert np.max(np.abs(analytic - numeric)) <= FD_TOLERANCE
    assert np.max(np.abs(numeric)) > 0 or name == "cross_entropy" and shape[1] == 1  # not a vacuous check


def test_cross_entropy_gradient_closed_forms():
    pred = np.array([[0.0, math.log(3.0)], [1.0, 1.0]])
    # one-hot rows: (softmax − t) / B
    grad = reference.loss_backward("cross_entropy", pred, [[0.0, 1.0], [1.0, 0.0]])
    assert_close(grad, [[0.25 / 2, -0.25 / 2], [-0.5 / 2, 0.5 / 2]], rtol=1e-15, atol=1e-17)
    # a row summing to 2: softmax · 2 − t
    grad = reference.loss_backward("cross_entropy", pred[:1], [[1.0, 1.0]])
    assert_close(grad, [[0.5 - 1.0, 1.5 - 1.0]], rtol=1e-15)


def test_mse_loss_backward_is_mse_backward():
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        pred, target = rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)
        np.testing.assert_array_equal(reference.loss_backward("mse", pred, target),
                                      reference.mse_backward(pred, target))
        assert reference.loss_forward("mse", pred, target) == reference.mse_forward(pred, target)


def test_mse_of_any_shape_and_refused_mismatch():
    pred, target = np.arange(6.0).reshape(1, 2, 3), np.ones((1, 2, 3))
    assert reference.mse_forward(pred, target) == np.mean((pred - target) ** 2)
    grad = reference.mse_backward(pred, target, scale=0.5)
    assert grad.shape == pred.shape and np.array_equal(grad, 0.5 * (pred - target))
    for call in (reference.mse_forward, reference.mse_backward):
        with pytest.raises(ValueError, match=r"^target has shape \(3,\), pred \(2, 3\)"):
            call(np.zeros((2, 3)), np.zeros(3))  # no silent broadcasting


@pytest.mark.parametrize("name", reference.LOSSES)
def test_loss_float32_keeps_its_dtype_and_accepts_views(name):
    pred, target, delta = loss_case(name, (8, 6), seed=5)
    wide = np.zeros((8, 12), dtype=np.float32)
    wide[:, ::2] = pred  # a non-contiguous float32 view
    pred32 = wide[:, ::2]
    target = target.astype(np.float32)  # float32 only when every input is (as the kernels)
    grad = reference.loss_backward(name, pred32, target, delta)
    assert grad.dtype == np.float32
    assert_close(grad, reference.loss_backward(name, pred32.astype(np.float64), target.astype(np.float32), delta),
                 rtol=1e-5, atol=1e-7, what="float32 vs float64 gradient")
    value = reference.loss_forward(name, pred32, target, delta)
    assert isinstance(value, float)
    assert value == pytest.approx(reference.loss_forward(name, pred32.astype(np.float64), target, delta), rel=1e-5)
    assert reference.loss_forward(name, np.zeros((0, 6)), np.zeros((0, 6)), delta) == 0.0


def test_cross_entropy_and_bce_stay_finite_at_huge_logits():
    pred = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]])
    target = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    ce = reference.loss_forward("cross_entropy", pred, target)
    assert ce == pytest.approx(2000.0 / 2)  # row 1: −log_softmax = 2000; row 2: ≈ 0
    assert np.all(np.isfinite(reference.loss_backward("cross_entropy", pred, target)))
    bce = reference.loss_forward("binary_cross_entropy", [[1000.0, -1000.0, 1000.0]], [[0.0, 1.0, 1.0]])
    assert bce == pytest.approx(2000.0 / 3)
    grad = reference.loss_backward("binary_cross_entropy", [[1000.0, -1000.0, 1000.0]], [[0.0, 1.0, 1.0]])
    assert_close(grad, [[1 / 3, -1 / 3, 0.0]], rtol=1e-15, atol=1e-300)
    for dtype in (np.float32, np.float64):
        big = pred.astype(dtype)
        assert math.isfinite(reference.loss_forward("cross_entropy", big, target))
        assert math.isfinite(reference.loss_forward("binary_cross_entropy", big, target))


def test_softmax_rows_sum_to_one():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((9, 5)) * 3
    s = reference.softmax(z)
    assert_close(s.sum(axis=1), np.ones(9), rtol=1e-15, what="row sums")
    assert_close(s, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-14)
    s32 = reference.softmax(np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32))
    assert s32.dtype == np.float32 and np.all(np.isfinite(s32))
    assert_close(s32, [[1.0, 0.0, 0.0]], rtol=0, atol=1e-30)
    assert_close(reference.softmax(z + 700.0), s, rtol=1e-12, what="shift invariance")


def test_loss_errors():
    with pytest.raises(ValueError, match="binary_cross_entropy"):
        reference.loss_forward("hinge", [[0.0]], [[0.0]])
    with pytest.raises(ValueError, match="cross_entropy"):
        reference.loss_backward("nll", [[0.0]], [[0.0]])
    with pytest.raises(ValueError, match="delta"):
        reference.loss_forward("huber", [[0.0]], [[0.0]], delta=0.0)
    with pytest.raises(ValueError, match="shape"):
        reference.loss_backward("mse", np.zeros((2, 3)), np.zeros((3, 2)))


# ---- gradient preprocessing ------------------------------------------------------------------------


def test_grad_norm_and_clip_scale():
    g = np.array([3.0, -4.0, 0.0])
    assert reference.grad_norm(g) == 5.0
    assert reference.grad_norm(np.array([3.0, -4.0, 0.5]), clip_value=1.0) == 1.5  # √(1 + 1 + 0.25)
    assert reference.grad_norm(g.reshape(3, 1)[::2]) == 3.0  # any shape, views
    # float32 values whose squares overflow float32: the sum is in float64
    big = np.full(4, 1e20, dtype=np.float32)
    assert reference.grad_norm(big) == pytest.approx(2e20, rel=1e-7)
    assert reference.clip_scale(5.0, None) == 1.0
    assert reference.clip_scale(5.0, 10.0) == 1.0
    assert reference.clip_scale(0.0, 1.0) == 1.0
    assert reference.clip_scale(10.0, 5.0) == 5.0 / (10.0 + 1e-6)


def test_clipping_matches_torch():
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(4).standard_normal(50) * 3
    for max_norm, clip_value in [(1.0, None), (100.0, None), (2.0, 0.5)]:
        t = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
        t.grad = torch.tensor(g)
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_([t], clip_value)
        torch_norm = torch.nn.utils.clip_grad_norm_([t], max_norm).item()
        norm = reference.grad_norm(g, clip_value)
        assert norm == pytest.approx(torch_norm, rel=1e-13)
        clipped = np.clip(g, -clip_value, clip_value) if clip_value is not None else g
        assert_close(reference.clip_scale(norm, max_norm) * clipped, t.grad.numpy(), rtol=1e-13)


# ---- optimizers: by hand -----------------------------------------------------------------------------


def test_sgd_step_by_hand():
    p0, g1, g2 = np.array([1.0, -2.0, 0.5]), np.array([0.5, 0.25, -1.0]), np.array([-0.5, 1.0, 2.0])
    lr, mu, damp, wd = 0.1, 0.9, 0.25, 0.01
    # plain: p − lr·g, no velocity needed
    p = p0.copy()
    reference.sgd_step(p, g1, None, lr=lr)
    assert_close(p, p0 - lr * g1, rtol=1e-15)
    # momentum with dampening: v1 = g1 (no dampening at t = 1), v2 = μ v1 + (1 − d) g2
    p, v = p0.copy(), np.zeros(3)
    reference.sgd_step(p, g1, v, lr=lr, momentum=mu, dampening=damp, step=1)
    assert_close(v, g1, rtol=0)
    reference.sgd_step(p, g2, v, lr=lr, momentum=mu, dampening=damp, step=2)
    v2 = mu * g1 + (1 - damp) * g2
    assert_close(v, v2, rtol=1e-15)
    assert_close(p, p0 - lr * g1 - lr * v2, rtol=1e-14)
    # nesterov, weight decay, first step: g' = g + wd p, v = g', p − lr (g' + μ v)
    p, v = p0.copy(), np.zeros(3)
    reference.sgd_step(p, g1, v, lr=lr, momentum=mu, nesterov=True, weight_decay=wd, step=1)
    g_wd = g1 + wd * p0
    assert_close(p, p0 - lr * (1 + mu) * g_wd, rtol=1e-14)
    # grad_scale and clip_value: g = scale · clamp(g); grads untouched
    grads = np.array([3.0, -0.5])
    p = np.zeros(2)
    reference.sgd_step(p, grads, None, lr=1.0, grad_scale=0.5, clip_value=1.0)
    assert_close(p, [-0.5, 0.25], rtol=0)
    assert_close(grads, [3.0, -0.5], rtol=0, what="grads must not change")


def test_adam_first_step_moves_each_weight_by_lr():
    # t = 1: m̂ = g, v̂ = g², so p moves by lr · g / (|g| + eps) ≈ lr · sign(g)
    rng = np.random.default_rng(6)
    p0, g = rng.standard_normal(20), rng.standard_normal(20)
    lr = 1e-3
    p, m, v = p0.copy(), np.zeros(20), np.zeros(20)
    reference.adam_step(p, g, m, v, lr=lr, step=1)
    assert_close(p, p0 - lr * g / (np.abs(g) + 1e-8), rtol=1e-15)
    assert_close(p, p0 - lr * np.sign(g), rtol=0, atol=lr * 1e-5)
    assert_close(m, 0.1 * g, rtol=1e-15)
    assert_close(v, 0.001 * g * g, rtol=1e-14)
    # Adam with L2: the sign of g + wd·p; AdamW: p (1 − lr·wd) first, then the sign of g
    wd = 0.5
    p = p0.copy()
    reference.adam_step(p, g, np.zeros(20), np.zeros(20), lr=lr, step=1, weight_decay=wd)
    assert_close(p, p0 - lr * np.sign(g + wd * p0), rtol=0, atol=lr * 1e-5)
    p = p0.copy()
    reference.adam_step(p, g, np.zeros(20), np.zeros(20), lr=lr, step=1, weight_decay=wd, decoupled=True)
    assert_close(p, p0 - lr * wd * p0 - lr * g / (np.abs(g) + 1e-8), rtol=1e-15)


def test_adam_second_step_in_python_floats():
    b1, b2, eps, lr = 0.8, 0.99, 1e-8, 0.05
    p, g1, g2 = 0.3, 0.2, -0.7
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1 * g1
    p1 = p - lr * (m1 / (1 - b1)) / (math.sqrt(v1 / (1 - b2)) + eps)
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2 * g2
    p2 = p1 - lr * (m2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps)
    params, m, v = np.array([p]), np.zeros(1), np.zeros(1)
    for t, g in ((1, g1), (2, g2)):
        reference.adam_step(params, np.array([g]), m, v, lr=lr, beta1=b1, beta2=b2, eps=eps, step=t)
    assert params[0] == pytest.approx(p2, rel=1e-14)
    assert m[0] == pytest.approx(m2, rel=1e-14) and v[0] == pytest.approx(v2, rel=1e-14)


@pytest.mark.parametrize("which", ["sgd", "adam", "adamw", "lamb"])
def test_optimizer_steps_in_float32_and_on_views(which):
    rng = np.random.default_rng(7)
    p64, g64 = rng.standard_normal(12), rng.standard_normal(12)

    def run(params, grads, dtype):
        state = [np.zeros(params.shape, dtype=dtype) for _ in range(2)]
        for t in (1, 2, 3):
            if which == "sgd":
                reference.sgd_step(params, grads, state[0], lr=0.1, momentum=0.9, weight_decay=0.01, step=t)
            elif which == "lamb":
                reference.lamb_step(params, grads, *state, lr=0.1, weight_decay=0.01, step=t, segments=[(0, 5)])
            else:
                reference.adam_step(params, grads, *state, lr=0.1, weight_decay=0.01, step=t,
                                    decoupled=which == "adamw")

    expected = p64.copy()
    run(expected, g64, np.float64)
    p32 = p64.astype(np.float32)
    run(p32, g64.astype(np.float32), np.float32)
    assert p32.dtype == np.float32
    assert_close(p32, expected, rtol=2e-5, atol=2e-6, what="float32 vs float64")
    assert not np.allclose(expected, p64)  # it moved
    # a strided view of a bigger buffer: updated in place, the rest untouched
    buffer = np.full(24, 7.0)
    buffer[::2] = p64
    run(buffer[::2], g64, np.float64)
    assert_close(buffer[::2], expected, rtol=1e-15, what="strided view")
    assert np.all(buffer[1::2] == 7.0)


def test_optimizer_argument_errors():
    p = np.zeros(3)
    with pytest.raises(ValueError, match="velocity"):
        reference.sgd_step(p, np.ones(3), None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="shape"):
        reference.adam_step(p, np.ones(3), np.zeros(2), np.zeros(3), lr=0.1, step=1)
    with pytest.raises(ValueError, match="step"):
        reference.adam_step(p, np.ones(3), np.zeros(3), np.zeros(3), lr=0.1, step=0)
    with pytest.raises(ValueError, match="overlapping"):
        reference.lamb_step(p, np.ones(3), np.zeros(3), np.zeros(3), lr=0.1, step=1, segments=[(0, 2), (1, 2)])
    with pytest.raises(ValueError, match="outside"):
        reference.lamb_step(p, np.ones(3), np.zeros(3), np.zeros(3), lr=0.1, step=1, segments=[(2, 2)])
    with pytest.raises(TypeError, match=r"^params: expected a float32 or float64 NumPy array"):
        reference.sgd_step([0.0, 1.0], [1.0, 1.0], None, lr=0.1)


# ---- LAMB ------------------------------------------------------------------------------------------


def test_lamb_trust_ratio_by_hand():
    # t = 1, eps = 0: m̂ = g, v̂ = g², r = sign(g) = (1, −1); with wd: u = r + wd·p
    p0, g = np.array([3.0, 4.0]), np.array([2.0, -0.5])
    lr = 0.01
    p = p0.copy()
    reference.lamb_step(p, g, np.zeros(2), np.zeros(2), lr=lr, eps=0.0, step=1, segments=[(0, 2)])
    trust = 5.0 / math.sqrt(2.0)  # ‖p‖ = 5, ‖u‖ = √2
    assert_close(p, [3.0 - lr * trust, 4.0 + lr * trust], rtol=1e-15)
    p = p0.copy()
    reference.lamb_step(p, g, np.zeros(2), np.zeros(2), lr=lr, eps=0.0, weight_decay=0.1, step=1, segments=[(0, 2)])
    u = np.array([1.0 + 0.3, -1.0 + 0.4])
    trust = 5.0 / math.sqrt(1.3**2 + 0.6**2)
    assert_close(p, p0 - lr * trust * u, rtol=1e-15)


def test_lamb_segments_zero_weights_zero_update_and_outside():
    p0 = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 5.0, -3.0])
    g = np.array([1.0, -2.0, 0.0, 0.0, 0.0, 4.0, 0.5])
    lr = 0.1
    p = p0.copy()
    m, v = np.zeros(7), np.zeros(7)
    # segment A = [0, 2): zero weights → trust 1; B = [2, 5): zero gradient → u = 0, trust 1, nothing moves;
    # C = [5, 6): one value, trust = |p| / |u|; index 6 lies outside every segment → trust 1.
    # At t = 1, u = r = g / (|g| + eps).
    reference.lamb_step(p, g, m, v, lr=lr, step=1, segments=[(0, 2), (2, 3), (5, 1)])
    u = g / (np.abs(g) + 1e-6)
    assert_close(p[:2], -lr * u[:2], rtol=1e-15, what="zero-weight segment (trust 1)")
    assert np.array_equal(p[2:5], p0[2:5]), "a segment with zero update must not move"
    assert_close(p[5], 5.0 - lr * (5.0 / u[5]) * u[5], rtol=1e-15, what="trust |p|/|u|")
    assert_close(p[6], -3.0 - lr * u[6], rtol=1e-15, what="outside every segment (trust 1)")
    assert_close(m, 0.1 * g, rtol=1e-15)


def python_lamb(params, grads_per_step, segments, lr, b1, b2, eps, wd):
    """LAMB written out per value in Python floats, from the paper's Algorithm 2."""
    p = [float(x) for x in params]
    m, v = [0.0] * len(p), [0.0] * len(p)
    covered = {i for off, size in segments for i in range(off, off + size)}
    outside = [i for i in range(len(p)) if i not in covered]
    for t, g in enumerate(grads_per_step, start=1):
        u = []
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            r = (m[i] / (1 - b1**t)) / (math.sqrt(v[i] / (1 - b2**t)) + eps)
            u.append(r + wd * p[i])
        new = [p[i] - lr * u[i] for i in range(len(p))]  # trust 1 outside the segments
        for off, size in segments:
            group = range(off, off + size)
            p_norm = math.sqrt(sum(p[i] ** 2 for i in group))
            u_norm = math.sqrt(sum(u[i] ** 2 for i in group))
            trust = p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0
            for i in group:
                new[i] = p[i] - lr * trust * u[i]
        assert outside  # the test's segments leave values outside
        p = new
    return np.array(p)


def test_lamb_matches_python_loops_over_steps():
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal(11)
    grads = [rng.standard_normal(11) for _ in range(4)]
    segments = [(0, 6), (6, 3)]  # indices 9 and 10 outside
    expected = python_lamb(p0, grads, segments, lr=0.02, b1=0.9, b2=0.99, eps=1e-6, wd=0.05)
    p, m, v = p0.copy(), np.zeros(11), np.zeros(11)
    for t, g in enumerate(grads, start=1):
        reference.lamb_step(p, g, m, v, lr=0.02, beta1=0.9, beta2=0.99, weight_decay=0.05, step=t, segments=segments)
    assert_close(p, expected, rtol=1e-13)


# ---- optimizers vs torch.optim ------------------------------------------------------------------------


def torch_run(torch, make_optimizer, p0, grads, lrs=None, max_norm=None, clip_value=None):
    param = torch.nn.Parameter(torch.tensor(p0.copy()))
    optimizer = make_optimizer([param])
    for step, g in enumerate(grads):
        param.grad = torch.tensor(g.copy())
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_([param], clip_value)
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_([param], max_norm)
        if lrs is not None:
            optimizer.param_groups[0]["lr"] = lrs[step]
        optimizer.step()
    return param.detach().numpy(), optimizer.state[param]


SGD_CASES = [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.8, nesterov=True, weight_decay=0.05),
    dict(momentum=0.5, dampening=0.5, weight_decay=0.1),
]


@pytest.mark.parametrize("config", SGD_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_torch(config):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    p0, grads = rng.standard_normal(9), [rng.standard_normal(9) for _ in range(5)]
    expected, state = torch_run(torch, lambda ps: torch.optim.SGD(ps, lr=0.05, **config), p0, grads)
    p, velocity = p0.copy(), np.zeros(9)
    for t, g in enumerate(grads, start=1):
        reference.sgd_step(p, g, velocity, lr=0.05, step=t, **config)
    assert_close(p, expected, rtol=1e-13, atol=1e-15)
    if config["momentum"]:
        assert_close(velocity, state["momentum_buffer"].numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind,weight_decay", [("adam", 0.0), ("adam", 0.1), ("adamw", 0.1), ("adamw", 0.0)])
def test_adam_matches_torch(kind, weight_decay):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    p0, grads = rng.standard_normal(9), [rng.standard_normal(9) for _ in range(5)]
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    expected, state = torch_run(
        torch, lambda ps: cls(ps, lr=0.01, betas=(0.85, 0.995), eps=1e-8, weight_decay=weight_decay), p0, grads)
    p, m, v = p0.copy(), np.zeros(9), np.zeros(9)
    for t, g in enumerate(grads, start=1):
        reference.adam_step(p, g, m, v, lr=0.01, beta1=0.85, beta2=0.995, weight_decay=weight_decay, step=t,
                            decoupled=kind == "adamw")
    assert_close(p, expected, rtol=1e-13, atol=1e-15)
    assert_close(m, state["exp_avg"].numpy(), rtol=1e-13, atol=1e-16)
    assert_close(v, state["exp_avg_sq"].numpy(), rtol=1e-13, atol=1e-16)


def test_optimizer_class_with_clipping_and_schedule_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    p0, grads = rng.standard_normal(9), [rng.standard_normal(9) * 3 for _ in range(6)]
    schedule = {"kind": "cosine", "warmup_steps": 2, "total_steps": 4, "min_factor": 0.1}
    lrs = [0.02 * reference.schedule_factor(schedule, t) for t in range(6)]
    expected, _ = torch_run(torch, lambda ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=0.01), p0, grads,
                            lrs=lrs, max_norm=1.5, clip_value=2.0)
    optimizer = reference.Optimizer("adamw", 0.02, weight_decay=0.01, schedule=schedule, clip_norm=1.5, clip_value=2.0)
    p = p0.copy()
    for g in grads:
        optimizer.step(p, g, None)
    assert_close(p, expected, rtol=1e-13, atol=1e-15)


# ---- the Optimizer class --------------------------------------------------------------------------------


def test_optimizer_class_bookkeeping():
    rng = np.random.default_rng(13)
    p0, g = rng.standard_normal(6), rng.standard_normal(6) * 10
    schedule = {"kind": "step", "step_size": 1, "gamma": 0.5}
    opt = reference.Optimizer("adam", 0.1, schedule=schedule, clip_norm=1.0)
    assert opt.eps == 1e-8 and reference.Optimizer("lamb", 0.1).eps == 1e-6
    p = p0.copy()
    infos = [opt.step(p, g, None) for _ in range(3)]
    assert [info["lr"] for info in infos] == [0.1, 0.05, 0.025]
    assert all(info["grad_norm"] == reference.grad_norm(g) for info in infos)  # the norm before clipping
    assert opt.t == 3 and opt.m.shape == p.shape and opt.m.dtype == p.dtype
    # the same three steps by the functions, with the clipping factor of the norm
    expected, m, v = p0.copy(), np.zeros(6), np.zeros(6)
    scale = reference.clip_scale(reference.grad_norm(g), 1.0)
    assert scale < 0.1
    for t in range(3):
        reference.adam_step(expected, g, m, v, lr=0.1 * 0.5**t, step=t + 1, grad_scale=scale)
    assert_close(p, expected, rtol=0)
    # reset: state and count forgotten, so the next step is a first step again
    opt.reset()
    assert opt.t == 0 and opt.m is None
    q, fresh = p0.copy(), p0.copy()
    opt.step(q, g, None)
    reference.Optimizer("adam", 0.1, schedule=schedule, clip_norm=1.0).step(fresh, g, None)
    assert_close(q, fresh, rtol=0)


def test_optimizer_class_errors():
    with pytest.raises(ValueError, match="adamw"):
        reference.Optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="kind"):
        reference.Optimizer("sgd", 0.1, schedule={"kind": "linear"})
    with pytest.raises(ValueError, match="segments"):
        reference.Optimizer("lamb", 0.1).step(np.zeros(3), np.ones(3), None)


# ---- schedules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,expected", [
    (None, {0: 1.0, 100: 1.0}),
    ({"kind": "constant"}, {0: 1.0, 7: 1.0}),
    ({"kind": "constant", "warmup_steps": 4}, {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 50: 1.0}),
    ({"kind": "step", "step_size": 3, "gamma": 0.5}, {0: 1.0, 2: 1.0, 3: 0.5, 5: 0.5, 6: 0.25, 9: 0.125}),
    ({"kind": "step", "step_size": 3, "gamma": 0.5, "warmup_steps": 2},
     {0: 0.5, 1: 1.0, 2: 1.0, 4: 1.0, 5: 0.5, 8: 0.25}),
    ({"kind": "exponential", "gamma": 0.9}, {0: 1.0, 1: 0.9, 3: 0.9**3}),
    ({"kind": "exponential", "gamma": 0.9, "warmup_steps": 1}, {0: 1.0, 1: 1.0, 2: 0.9, 4: 0.9**3}),
    ({"kind": "cosine", "total_steps": 10}, {0: 1.0, 5: 0.5, 10: 0.0, 30: 0.0}),
    ({"kind": "cosine", "total_steps": 10, "min_factor": 0.1},
     {0: 1.0, 5: 0.55, 10: 0.1, 11: 0.1, 1: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 10))}),
    ({"kind": "cosine", "total_steps": 4, "min_factor": 0.2, "warmup_steps": 3},
     {0: 1 / 3, 2: 1.0, 3: 1.0, 5: 0.6, 7: 0.2, 100: 0.2}),
])
def test_schedule_factor_values(spec, expected):
    for step, factor in expected.items():
        assert reference.schedule_factor(spec, step) == pytest.approx(factor, rel=1e-15, abs=1e-16), f"step {step}"


def test_schedules_match_torch_schedulers():
    torch = pytest.importorskip("torch")
    cases = [
        ({"kind": "step", "step_size": 3, "gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        ({"kind": "exponential", "gamma": 0.8}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8)),
        ({"kind": "cosine", "total_steps": 8, "min_factor": 0.1},
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=0.1)),
    ]
    for spec, make in cases:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make(optimizer)
        for t in range(9):  # torch's cosine is periodic beyond T_max; ours holds: compare up to T
            assert reference.schedule_factor(spec, t) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-12), (spec, t)
            optimizer.step()
            scheduler.step()


def test_schedule_errors():
    with pytest.raises(ValueError, match="cosine"):
        reference.schedule_factor({"kind": "linear"}, 0)
    with pytest.raises(ValueError, match="gamma"):
        reference.schedule_factor({"kind": "exponential"}, 0)
    with pytest.raises(ValueError, match="unknown keys"):
        reference.schedule_factor({"kind": "step", "step_size": 2, "gamma": 0.5, "warmup": 3}, 0)
    with pytest.raises(ValueError, match="step_size"):
        reference.schedule_factor({"kind": "step", "step_size": 0, "gamma": 0.5}, 0)
    with pytest.raises(ValueError, match="total_steps"):
        reference.schedule_factor({"kind": "cosine", "total_steps": 0}, 0)
    with pytest.raises(ValueError, match="min_factor"):
        reference.schedule_factor({"kind": "cosine", "total_steps": 5, "min_factor": 1.5}, 0)
    with pytest.raises(ValueError, match="step"):
        reference.schedule_factor({"kind": "constant"}, -1)


# ---- Rng: the C++ generator's values ------------------------------------------------------------------
#
# Printed by a throwaway program against cpp/include/fastmlp/random.hpp (g++ -O2): for each seed,
# five next(); four uniform() and five normal() and the below() of BELOW_BOUNDS, each from a fresh
# Rng(seed); and MIXED: normal, uniform, normal, normal, next from one Rng(seed).

BELOW_BOUNDS = [1, 2, 3, 7, 10, 1000, 0x8000000000000001, 0xFFFFFFFFFFFFFFFF]
CPP_RNG = {
    0: dict(
        next=[11091344671253066420, 13793997310169335082, 1900383378846508768, 7684712102626143532,
              13521403990117723737],
        uniform=[0.60126299941790484, 0.74777409254723981, 0.10301998939503632, 0.4165890778296456],
        normal=[-0.014106797381249181, -1.0085864725210538, -1.8458950876958273, 1.0669282078900475,
                0.78817916144876576],
        below=[0, 1, 0, 2, 7, 999, 620104743558096346, 1967799970308132507],
        mixed=[-0.014106797381249181, 0.10301998939503632, -1.0085864725210538, -0.14111270430912182,
               18442103541295991498],
    ),
    1: dict(
        next=[12966619160104079557, 9600361134598540522, 10590380919521690900, 7218738570589545383,
              12860671823995680371],
        uniform=[0.70292183315885048, 0.52043661993885693, 0.5741057000197225, 0.39132860204190445],
        normal=[-0.83274143446567073, -0.10752148995724746, -0.81732098111511153, 0.66473296917503033,
                0.52658478393606956],
        below=[0, 1, 1, 2, 6, 143, 3515805966490203214, 15996139959407692320],
        mixed=[-0.83274143446567073, 0.5741057000197225, -0.10752148995724746, -0.44632724828118453,
               2648436617965840162],
    ),
    42: dict(
        next=[1546998764402558742, 6990951692964543102, 12544586762248559009, 17057574109182124193,
              18295552978065317476],
        uniform=[0.083862971059882163, 0.37898025066266861, 0.68004341102813937, 0.92469294532538759],
        normal=[-1.6132237513849161, 1.5344873235334195, 0.78169204505734891, -0.40019349432348483,
                0.015871293375984964],
        below=[0, 0, 2, 6, 9, 769, 6633989454467100377, 15679888225317814406],
        mixed=[-1.6132237513849161, 0.68004341102813937, 1.5344873235334195, 0.39518627748085838,
               14199186830065750584],
    ),
    0xFFFFFFFFFFFFFFFF: dict(
        next=[10328197420357168392, 14156678507024973869, 9357971779955476126, 13791585006304312367,
              10463432026814718762],
        uniform=[0.55989270405052116, 0.7674350796247662, 0.50729666669428841, 0.74764332129268218],
        normal=[0.11775181095091966, -1.0705861656393874, -0.017250642598140971, -1.1649124540286775,
                -0.12190288029025144],
        below=[0, 1, 1, 5, 5, 731, 7080675421509864817, 11558284878126271841],
        mixed=[0.11775181095091966, 0.50729666669428841, -1.0705861656393874, -0.69563938202981379,
               13498236496097551653],
    ),
}
# Rng(7): eight below(2⁶³ + 1), where Lemire's method rejects about half the draws, then next()
CPP_BELOW_REJECTING = [6461677535414237997, 7744196453246319819, 9049029322324588832, 9139072988219048332,
                       1400256439129669809, 6750200521807187948, 2367621049898315487, 1443456880271936157]
CPP_NEXT_AFTER_REJECTING = 2466360462016250797
CPP_NEXT_AFTER_EIGHT_NEXT = 7447070967899653408  # Rng(7) after eight plain next(): a rejection did happen
# Rng(123): six normal()
CPP_NORMALS_123 = [1.7705305967065215, -0.34268052190200948, 0.8611198253541037, 0.88285889202085532,
                   1.4733334715623352, -0.00085857652064251456]


@pytest.mark.parametrize("seed", list(CPP_RNG))
def test_rng_matches_the_cpp_generator(seed):
    expected = CPP_RNG[seed]
    rng = reference.Rng(seed)
    assert [rng.next() for _ in range(5)] == expected["next"]
    rng = reference.Rng(seed)
    assert [rng.uniform() for _ in range(4)] == expected["uniform"]
    rng = reference.Rng(seed)
    assert [rng.normal() for _ in range(5)] == expected["normal"]
    rng = reference.Rng(seed)
    assert [rng.below(bound) for bound in BELOW_BOUNDS] == expected["below"]
    rng = reference.Rng(seed)
    mixed = [rng.normal(), rng.uniform(), rng.normal(), rng.normal(), rng.next()]
    assert mixed == expected["mixed"]


def test_rng_below_rejection_loop_and_bounds():
    rng = reference.Rng(7)
    assert [rng.below(0x8000000000000001) for _ in range(8)] == CPP_BELOW_REJECTING
    assert rng.next() == CPP_NEXT_AFTER_REJECTING
    plain = reference.Rng(7)
    for _ in range(8):
        plain.next()
    assert plain.next() == CPP_NEXT_AFTER_EIGHT_NEXT != CPP_NEXT_AFTER_REJECTING
    rng = reference.Rng(3)
    draws = [rng.below(6) for _ in range(600)]
    assert set(draws) == set(range(6))
    with pytest.raises(ValueError, match=r"^below: bound must be in \[1, 2\*\*64\)"):
        rng.below(0)
    assert reference.Rng(-1).next() == CPP_RNG[0xFFFFFFFFFFFFFFFF]["next"][0]  # the seed modulo 2⁶⁴


def test_rng_state_round_trip():
    rng = reference.Rng(9)
    rng.normal()  # leaves a spare
    words, has_spare, spare = state = rng.state()
    assert len(words) == 4 and has_spare is True and spare != 0.0
    copy = reference.Rng(0)
    copy.set_state(*state)
    assert [copy.normal() for _ in range(3)] == [rng.normal() for _ in range(3)]
    assert copy.state() == rng.state()


@pytest.mark.parametrize("words, message", [
    ((0, 0, 0, 0), "all-zero"),
    ((1, 2, 3), "four integers"),
    ((1, 2, 3, 1 << 64), "four integers"),
    ((1, 2, 3, -1), "four integers"),
])
def test_rng_set_state_errors(words, message):
    rng = reference.Rng(1)
    before = rng.state()
    with pytest.raises(ValueError, match=rf"^words: .*{message}"):
        rng.set_state(words, False, 0.0)
    assert rng.state() == before


# ---- init_params and resolve_init -------------------------------------------------------------------------


def test_init_params_layout_and_stream():
    sizes = [4, 3, 2]
    params = reference.init_params(sizes, ["he_normal", "xavier_uniform"], seed=5)
    assert params.dtype == np.float32 and params.shape == (4 * 3 + 3 + 3 * 2 + 2,)
    assert np.all(params[12:15] == 0) and np.all(params[21:] == 0), "biases are zero"
    p64 = reference.init_params(sizes, ["he_normal", "xavier_uniform"], seed=5, dtype="float64")
    assert p64.dtype == np.float64 and np.array_equal(params, p64.astype(np.float32))
    # one Rng for the whole network, layer by layer, weights row-major
    rng = reference.Rng(5)
    w0 = [rng.normal() * math.sqrt(2 / 4) for _ in range(12)]
    w1 = [(2 * rng.uniform() - 1) * math.sqrt(6 / 5) for _ in range(6)]
    assert p64[:12].tolist() == w0 and p64[15:21].tolist() == w1
    assert not np.array_equal(p64, reference.init_params(sizes, ["he_normal", "xavier_uniform"], 6, "float64"))
    assert np.array_equal(reference.init_params(sizes, "lecun_normal", 5),
                          reference.init_params(sizes, ["lecun_normal"] * 2, 5))


def test_init_params_against_cpp_normals():
    # [1, 3, 1]: W_0 takes normals 1-3 (He, fan_in 1); W_1 normals 4-6 (Xavier, fan 3 + 1),
    # the 4th being the spare kept across the layer boundary.
    p = reference.init_params([1, 3, 1], ["he_normal", "xavier_normal"], seed=123, dtype="float64")
    expected = [x * math.sqrt(2.0) for x in CPP_NORMALS_123[:3]] + [0.0] * 3
    expected += [x * math.sqrt(2.0 / 4.0) for x in CPP_NORMALS_123[3:]] + [0.0]
    assert p.tolist() == expected


@pytest.mark.parametrize("scheme", reference.INIT_SCHEMES)
def test_init_params_scheme_statistics(scheme):
    fan_in, fan_out = 256, 512
    w = reference.init_params([fan_in, fan_out], [scheme], seed=11, dtype="float64")[: fan_in * fan_out]
    family, distribution = scheme.split("_")
    variance = {"he": 2 / fan_in, "xavier": 2 / (fan_in + fan_out), "lecun": 1 / fan_in}[family]
    std = math.sqrt(variance)
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 0.02 * std
    if distribution == "uniform":
        bound = math.sqrt(3) * std  # √6/√fan_in, √6/√(fan_in+fan_out), √3/√fan_in
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() >= 0.999 * bound
    else:
        assert np.abs(w).max() > 3.5 * std  # tails a uniform would not have


def test_init_params_errors():
    with pytest.raises(ValueError, match="he_uniform"):
        reference.init_params([2, 2], ["he"], 0)
    with pytest.raises(ValueError, match="one name per layer"):
        reference.init_params([2, 2, 2], ["he_normal"], 0)
    with pytest.raises(ValueError, match="dtype"):
        reference.init_params([2, 2], "he_normal", 0, dtype="int32")


@pytest.mark.parametrize("init,activation,expected", [
    ("auto", "tanh", "xavier_normal"),
    ("auto", "sigmoid", "xavier_normal"),
    ("auto", "relu", "he_normal"),
    ("auto", "leaky_relu", "he_normal"),
    ("auto", "swish", "he_normal"),
    ("auto", "gelu", "he_normal"),
    ("auto", "linear", "he_normal"),
    ("he", "tanh", "he_normal"),
    ("xavier", "relu", "xavier_normal"),
    ("glorot", "relu", "xavier_normal"),
    ("glorot_normal", "relu", "xavier_normal"),
    ("glorot_uniform", "relu", "xavier_uniform"),
    ("lecun", "relu", "lecun_normal"),
    *[(name, "sigmoid", name) for name in reference.INIT_SCHEMES],
])
def test_resolve_init(init, activation, expected):
    assert reference.resolve_init(init, activation) == expected


def test_resolve_init_errors():
    with pytest.raises(ValueError, match="xavier_uniform"):
        reference.resolve_init("orthogonal", "relu")
    with pytest.raises(ValueError, match=r"^init: expected one of .*; got 'He'"):
        reference.resolve_init("He", "relu")
    with pytest.raises(ValueError, match="activation"):
        reference.resolve_init("auto", "softplus")


def test_network_draws_its_init_from_its_generator():
    net = reference.Network([3, 4, 2], ["tanh", "relu"], "float64", seed=8)
    rng = reference.Rng(8)
    expected = reference.init_params([3, 4, 2], ["xavier_normal", "he_normal"], 8, "float64")  # "auto"
    np.testing.assert_array_equal(net.params, expected)
    for _ in range(3 * 4 + 4 * 2):
        rng.normal()
    assert net.rng.state() == rng.state(), "the generator goes on from where the init left it"
    uniform = reference.Network([3, 4, 2], ["tanh", "relu"], "float64", seed=8, init=["lecun_uniform", "he"])
    np.testing.assert_array_equal(uniform.params,
                                  reference.init_params([3, 4, 2], ["lecun_uniform", "he_normal"], 8, "float64"))
    given = reference.Network([3, 4, 2], ["tanh", "relu"], "float64", params=expected, seed=8)
    assert given.rng.state() == reference.Rng(8).state(), "given params: nothing drawn"
    with pytest.raises(ValueError, match=r"^init: expected one scheme or 2"):
        reference.Network([3, 4, 2], ["tanh", "relu"], init=["he"])


# ---- reference.Network with each loss, and fit with an Optimizer ------------------------------------------


def network_problem(loss, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, 3))
    if loss == "cross_entropy":
        y = np.eye(4)[rng.integers(0, 4, 6)]
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, (6, 4))
    else:
        y = rng.standard_normal((6, 4)) * 2
    net = reference.Network([3, 5, 4], ["tanh", "linear"], dtype="float64", seed=seed, loss=loss, delta=0.5)
    net.biases[0][...] = rng.uniform(-0.3, 0.3, 5)
    return net, X, y


@pytest.mark.parametrize("loss", reference.LOSSES)
def test_network_gradients_match_finite_differences(loss):
    net, X, y = network_problem(loss, seed=1)
    net.backward(X, y, net.forward(X))
    analytic = net.grads.copy()

    def loss_at(params):
        net.params[...] = params
        return net.loss(X, y)

    numeric = central_differences(loss_at, net.params.copy())
    assert np.max(np.abs(analytic - numeric)) <= FD_TOLERANCE
    assert np.max(np.abs(analytic)) > 1e-3


def test_network_default_loss_and_segments():
    net, X, y = network_problem("mse")
    default = reference.Network([3, 5, 4], ["tanh", "linear"], dtype="float64", params=net.params)
    assert default.loss_name == "mse"
    pred = default.forward(X)
    grad_w, _ = default.backward(X, y, pred)
    dA = reference.mse_backward(pred, y)  # the path the network always had
    dZ = dA  # linear output
    assert np.array_equal(grad_w[1], dZ.T @ np.tanh(X @ default.weights[0].T + default.biases[0]))
    assert default.loss(X, y) == reference.mse_forward(pred, y)
    assert default.segments() == [(0, 15), (15, 5), (20, 20), (40, 4)]
    with pytest.raises(ValueError, match="huber"):
        reference.Network([3, 2], ["linear"], loss="l1")


def test_fit_with_an_sgd_optimizer_equals_the_plain_fit():
    net, X, y = network_problem("mse", seed=2)
    twin = reference.Network([3, 5, 4], ["tanh", "linear"], dtype="float64", params=net.params)
    losses = net.fit(X, y, epochs=4, batch_size=4, lr=0.05)
    assert isinstance(losses, list) and len(losses) == 4
    history = twin.fit(X, y, epochs=4, batch_size=4, lr=123.0, optimizer=reference.Optimizer("sgd", 0.05))
    assert history["loss"] == losses
    assert np.array_equal(twin.params, net.params)


@pytest.mark.parametrize("kind", ["adam", "adamw", "lamb", "sgd"])
def test_fit_with_an_optimizer_learns_and_reports(kind):
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (32, 2))
    y = np.stack([X[:, 0] * X[:, 1], np.sin(2 * X[:, 0])], axis=1)
    net = reference.Network([2, 16, 2], ["tanh", "linear"], dtype="float64", seed=3)
    schedule = {"kind": "cosine", "warmup_steps": 3, "total_steps": 40, "min_factor": 0.1}
    lr = {"adam": 0.02, "adamw": 0.02, "lamb": 0.02, "sgd": 0.1}[kind]
    optimizer = reference.Optimizer(kind, lr, momentum=0.9, weight_decay=1e-4, schedule=schedule, clip_norm=5.0)
    start = net.params.copy()
    history = net.fit(X, y, epochs=12, batch_size=10, optimizer=optimizer)  # 4 batches an epoch, the last ragged
    assert set(history) == {"loss", "grad_norm", "lr"}
    assert all(len(values) == 12 for values in history.values())
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    assert max(history["loss"][-3:]) < min(history["loss"][:3]), history["loss"]
    assert all(math.isfinite(n) and n > 0 for n in history["grad_norm"])
    assert history["lr"] == [lr * reference.schedule_factor(schedule, 4 * epoch + 3) for epoch in range(12)]
    assert optimizer.t == 48
    # the first epoch by hand: weighted batch losses before each update, the mean of the norms
    replay = reference.Network([2, 16, 2], ["tanh", "linear"], dtype="float64", params=start)
    opt = reference.Optimizer(kind, lr, momentum=0.9, weight_decay=1e-4, schedule=schedule, clip_norm=5.0)
    total, norms = 0.0, []
    for begin in range(0, 32, 10):
        xb, yb = X[begin : begin + 10], y[begin : begin + 10]
        pred = replay.forward(xb)
        total += replay.loss(xb, yb) * len(xb)
        replay.backward(xb, yb, pred)
        norms.append(opt.step(replay.params, replay.grads, replay.segments())["grad_norm"])
    assert history["loss"][0] == pytest.approx(total / 32, rel=1e-14)
    assert history["grad_norm"][0] == pytest.approx(sum(norms) / 4, rel=1e-14)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_backward_output_and_decision_function_match_the_twin(activation):
    rng = np.random.default_rng(3)
    net = fm.Network([5, 7, 3], activation, dtype="float64", seed=2)
    twin = reference.Network.from_network(net)
    X, d_output = rng.normal(size=(4, 5)), rng.normal(size=(4, 3))
    np.testing.assert_allclose(net.decision_function(X), twin.decision_function(X), rtol=1e-12)
    net.forward(X)
    twin.forward(X)
    net.backward_output(X, d_output)
    twin.backward_output(X, d_output)
    np.testing.assert_allclose(net.grads, twin.grads, rtol=1e-10, atol=1e-13)
