"""Classification on scikit-learn's digits: fastmlp (its Network, and its
scikit-learn estimator fastmlp.sklearn.MLPClassifier) beside scikit-learn's
MLPClassifier (and PyTorch when installed), accuracy and fit time, one run.

The task of the training issue: 8×8 images (1797, 10 classes), inputs / 16,
a fixed stratified 25 % hold-out (random_state 0); a [64, 128, 10] ReLU network
with softmax cross-entropy, Adam (lr 3e-3, β = (0.9, 0.999)), batch 32,
20 epochs, shuffled. Every implementation gets the same split, architecture,
optimizer, batch size and epochs; each is fitted with --seeds seeds, and the
table shows the median fit time and the min / median / max test accuracy.

    python benchmarks/bench_digits.py [--seeds 5] [--epochs 20] [--threads 2]

Unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the command on machines that set
them (they slow NumPy's BLAS, which scikit-learn uses).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import blas_description, cpu_model, print_table  # noqa: E402

import fastmlp as fm  # noqa: E402


def data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def run_fastmlp(Xtr, Xte, ytr, yte, seed, epochs):
    net = fm.Network([64, 128, 10], activation="relu", loss="cross_entropy", seed=seed)
    start = time.perf_counter()
    net.fit(Xtr, ytr, epochs=epochs, batch_size=32, optimizer=fm.Adam(lr=3e-3))
    seconds = time.perf_counter() - start
    return seconds, net.score(Xte, yte)


def run_fastmlp_sklearn(Xtr, Xte, ytr, yte, seed, epochs):
    """fastmlp's scikit-learn estimator, set as the scikit-learn row is: the drop-in."""
    from fastmlp.sklearn import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(128,), activation="relu", solver="adam", learning_rate_init=3e-3,
                        batch_size=32, max_iter=epochs, alpha=0.0, tol=None, shuffle=True, random_state=seed)
    start = time.perf_counter()
    clf.fit(Xtr, ytr)
    seconds = time.perf_counter() - start
    return seconds, clf.score(Xte, yte)


def run_sklearn(Xtr, Xte, ytr, yte, seed, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(128,), activation="relu", solver="adam", learning_rate_init=3e-3,
                        batch_size=32, max_iter=epochs, alpha=0.0, tol=0.0, n_iter_no_change=epochs + 1,
                        shuffle=True, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    seconds = time.perf_counter() - start
    return seconds, clf.score(Xte, yte)


def run_torch(Xtr, Xte, ytr, yte, seed, epochs):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        for i in range(0, len(X), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean())
    return seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    try:
        import sklearn
    except ImportError:
        sys.exit("bench_digits needs scikit-learn: pip install scikit-learn")
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    runners = {"fastmlp": run_fastmlp, "fastmlp.sklearn.MLPClassifier": run_fastmlp_sklearn,
               "scikit-learn": run_sklearn}
    versions = [f"fastmlp {fm.__version__}", f"scikit-learn {sklearn.__version__}", f"NumPy {np.__version__}"]
    try:
        import torch

        torch.set_num_threads(args.threads)
        runners["PyTorch"] = run_torch
        versions.append(f"PyTorch {torch.__version__}")
    except ImportError:
        pass
    fm.set_num_threads(args.threads)
    limiter = threadpoolctl.threadpool_limits(args.threads) if threadpoolctl else None

    Xtr, Xte, ytr, yte = data()
    print("Digits classification: [64, 128, 10] ReLU, softmax cross-entropy, Adam lr 3e-3, batch 32")
    print(f"machine:  {cpu_model()}; threads {args.threads} for every implementation")
    print(f"versions: {', '.join(versions)}; BLAS {blas_description(threadpoolctl)}")
    print(f"data:     {len(Xtr)} train / {len(Xte)} test samples (stratified 25 % hold-out, random_state 0); "
          f"{args.epochs} epochs; seeds 0..{args.seeds - 1}, round-robin over the implementations\n")
    results = {name: [] for name in runners}
    for name, runner in runners.items():  # warm-up (imports, first-call costs)
        runner(Xtr, Xte, ytr, yte, 0, 1)
    for seed in range(args.seeds):
        for name, runner in runners.items():
            results[name].append(runner(Xtr, Xte, ytr, yte, seed, args.epochs))
    fast_time = statistics.median(t for t, _ in results["fastmlp"])
    rows = []
    for name, runs in results.items():
        times, accs = [t for t, _ in runs], [a for _, a in runs]
        rows.append([name, f"{statistics.median(times) * 1e3:.1f}",
                     f"{min(accs):.4f} / {statistics.median(accs):.4f} / {max(accs):.4f}",
                     "—" if name == "fastmlp" else f"{statistics.median(times) / fast_time:.2f}×"])
    print_table(["implementation", "fit ms (median)", "test accuracy min / median / max", "fastmlp faster by"], rows)
    if limiter is not None:
        limiter.unregister()


if __name__ == "__main__":
    main()
