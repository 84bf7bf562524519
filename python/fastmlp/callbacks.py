"""What runs between epochs: early stopping and progress printing.

Both run in Python once per epoch at most; everything inside an epoch stays in C++.
"""

from __future__ import annotations

import math
import shutil
import sys

import numpy as np

from ._validation import check_int, check_real

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Stops a fit when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A History key: "val_loss" (the default, when there is validation data;
        "loss" otherwise), "loss", "val_accuracy", "accuracy", ...
    patience : int
        Epochs without improvement tolerated before stopping.
    min_delta : float
        The least change that counts as an improvement.
    mode : "auto", "min" or "max"
        Whether smaller or larger is better; "auto" picks "max" for accuracies.
    restore_best_weights : bool
        At the end of the fit, put back the weights of the best epoch.
    """

    def __init__(self, monitor: str | None = None, patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True):
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"monitor: expected a History key such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.patience = check_int(patience, "patience", minimum=0)
        self.min_delta = check_real(min_delta, "min_delta", 0.0, math.inf, high_open=True)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        self.mode = mode
        if not isinstance(restore_best_weights, bool):
            raise TypeError(f"restore_best_weights: expected True or False, got {restore_best_weights!r}")
        self.restore_best_weights = restore_best_weights

    # ---- used by Network.fit ----
    def _start(self, has_validation: bool, keys) -> None:
        self._key = self.monitor or ("val_loss" if has_validation else "loss")
        if self._key not in keys:
            raise ValueError(f"EarlyStopping: monitor {self._key!r} is not recorded by this fit; "
                             f"choose one of {', '.join(sorted(keys))}")
        self._larger_is_better = self.mode == "max" or (self.mode == "auto" and "accuracy" in self._key)
        self._best = -math.inf if self._larger_is_better else math.inf
        self._best_epoch: int | None = None
        self._best_params: np.ndarray | None = None
        self._wait = 0

    def _update(self, epoch: int, logs: dict, params: np.ndarray) -> bool:
        """Records the epoch; True when the fit should stop."""
        value = logs[self._key]
        better = (value > self._best + self.min_delta) if self._larger_is_better else (value < self._best - self.min_delta)
        if better or self._best_epoch is None:
            self._best, self._best_epoch, self._wait = value, epoch, 0
            if self.restore_best_weights:  # one copy per fit, refilled at each improvement
                if self._best_params is None:
                    self._best_params = params.copy()
                else:
                    np.copyto(self._best_params, params)
            return False
        self._wait += 1
        return self._wait >= self.patience

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, min_delta={self.min_delta}, "
                f"mode={self.mode!r}, restore_best_weights={self.restore_best_weights})")


class ProgressPrinter:
    """verbose=1: one line per epoch; verbose=2: a progress bar (tqdm when it is
    installed, otherwise a plain line rewritten in place, kept within the
    terminal's width, with the loss and accuracy figures). Writes to stdout."""

    def __init__(self, verbose: int, epochs: int):
        self.verbose, self.epochs = verbose, epochs
        self._bar = None
        self._written = 0  # the plain bar's last line's length
        if verbose >= 2:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=epochs, unit="epoch", file=sys.stdout)

    @staticmethod
    def _format(logs: dict) -> str:
        return " - ".join(f"{key}: {value:.6g}" for key, value in logs.items() if not isinstance(value, list))

    def epoch_end(self, epoch: int, logs: dict) -> None:
        if self.verbose == 1:
            print(f"Epoch {epoch + 1}/{self.epochs} - {self._format(logs)}", file=sys.stdout, flush=True)
        elif self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if not isinstance(v, list)})
        elif self.verbose >= 2:
            width = 30
            done = int(width * (epoch + 1) / self.epochs)
            bar = "=" * done + "." * (width - done)
            # Within one terminal line: a line that wraps cannot be rewritten by "\r". Spaces
            # clear what a longer previous line left.
            columns = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            shown = {key: value for key, value in logs.items() if key not in ("grad_norm", "lr")}
            figures = " - ".join(f"{key}: {value:.4g}" for key, value in shown.items() if not isinstance(value, list))
            line = f"{epoch + 1}/{self.epochs} [{bar}] {figures}"[:columns]
            print("\r" + line.ljust(self._written), end="", file=sys.stdout, flush=True)
            self._written = len(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.verbose >= 2:
            print(file=sys.stdout, flush=True)
