"""The synthetic two-task regression data of the MMoE paper.

Ma, Zhao, Yi, Chen, Hong and Chi, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018, section 3.2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd

from polytask.errors import DataError


def _check_int(func: str, name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise DataError(
            f"{func}: argument {name!r} expected an integer >= {minimum}, "
            f"received {value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise DataError(
            f"{func}: argument {name!r} expected an integer >= {minimum}, received {value}"
        )
    return int(value)


def _check_real(
    func: str,
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    expected: str,
) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise DataError(
            f"{func}: argument {name!r} expected {expected}, "
            f"received {value!r} of type {type(value).__name__}"
        )
    number = float(value)
    too_low = number <= low if low_open else number < low
    # NaN compares False with everything, so only the finiteness check rejects it.
    if not math.isfinite(number) or too_low or number > high:
        raise DataError(f"{func}: argument {name!r} expected {expected}, received {value!r}")
    return number


@dataclass(frozen=True)
class _MMoETasks:
    """The parameters of one draw of the two MMoE synthetic tasks.

    ``w1`` and ``w2`` have shape ``(dim,)``; ``alpha`` and ``beta`` have shape ``(num_sin,)`` and
    are shared by both tasks.
    """

    w1: np.ndarray
    w2: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


def _mmoe_tasks(
    rng: np.random.Generator, *, correlation: float, dim: int, num_sin: int, scale: float
) -> _MMoETasks:
    """Draw the task weights and the sine parameters (the first draws from ``rng``)."""
    # QR of a Gaussian matrix gives two orthonormal columns, uniformly oriented in R^dim.
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = scale * u1
    w2 = scale * (correlation * u1 + math.sqrt(1.0 - correlation**2) * u2)
    alpha = rng.standard_normal(num_sin)
    beta = rng.standard_normal(num_sin)
    return _MMoETasks(w1=w1, w2=w2, alpha=alpha, beta=beta)


def _mmoe_response(x: np.ndarray, w: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Noise-free response ``w.x + sum_i sin(alpha_i * w.x + beta_i)`` for each row of ``x``."""
    wx = x @ w
    return wx + np.sin(np.outer(wx, alpha) + beta).sum(axis=1)


def mmoe_synthetic(
    n_samples: int,
    *,
    correlation: float,
    dim: int = 100,
    num_sin: int = 10,
    scale: float = 1.0,
    noise_std: float = 0.1,
    binary: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Two regression tasks whose correlation is controlled, as in the MMoE paper (sec. 3.2).

    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018. The generative process:

    1. ``u1, u2``: orthogonal unit vectors in ``R^dim`` (QR of a Gaussian ``dim x 2`` matrix).
    2. ``w1 = scale * u1`` and ``w2 = scale * (p * u1 + sqrt(1 - p^2) * u2)``, so that
       ``cos(w1, w2) = p = correlation``.
    3. ``alpha_i, beta_i ~ N(0, 1)`` for ``i = 1..num_sin``, drawn once and shared by both tasks.
    4. Each row: ``x ~ N(0, I_dim)`` and, for ``k = 1, 2``,
       ``y_k = w_k.x + sum_i sin(alpha_i * w_k.x + beta_i) + eps_k`` with
       ``eps_k ~ N(0, noise_std^2)``, independent across tasks.

    The paper uses ``dim = 100``, ``num_sin = 10``, noise variance 0.01 (``noise_std = 0.1``) and
    ``p`` in {0.5, 0.9, 1.0}; it does not give ``scale`` (its ``c``). The weights are the first
    draws from the seed, so one seed defines one pair of tasks: to get train and test sets of
    the same tasks, generate one frame and split it (for example with ``split_frame``).

    Args:
        n_samples: number of rows, at least 1.
        correlation: ``p``, the cosine between ``w1`` and ``w2``, in ``[-1, 1]``. The Pearson
            correlation of ``y1`` and ``y2`` grows with it but is not equal to it, because of the
            sine terms and the noise.
        dim: dimension ``d`` of ``x``, at least 2.
        num_sin: number ``m`` of sine terms, at least 0.
        scale: ``c``, the norm of both weight vectors, positive.
        noise_std: standard deviation of the Gaussian noise added to each label, at least 0.
        binary: if true, each ``y_k`` becomes 1 where it is above its median over this sample and
            0 elsewhere (about half positives), as int64.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same frame.

    Returns:
        A frame of ``n_samples`` rows: float32 columns ``x0 .. x{dim-1}``, then ``y1`` and ``y2``
        (float64, unitless; int64 0/1 when ``binary``). The labels are computed from the float32
        features as stored, so they are an exact function of the columns plus noise.

    Raises:
        DataError: an argument is out of range or of the wrong type.
    """
    func = "mmoe_synthetic"
    n_samples = _check_int(func, "n_samples", n_samples, minimum=1)
    p = _check_real(
        func, "correlation", correlation, low=-1.0, high=1.0, expected="a number in [-1, 1]"
    )
    dim = _check_int(func, "dim", dim, minimum=2)
    num_sin = _check_int(func, "num_sin", num_sin, minimum=0)
    scale = _check_real(
        func, "scale", scale, low=0.0, low_open=True, expected="a finite number > 0"
    )
    noise_std = _check_real(func, "noise_std", noise_std, low=0.0, expected="a finite number >= 0")
    seed = _check_int(func, "seed", seed, minimum=0)

    rng = np.random.default_rng(seed)
    tasks = _mmoe_tasks(rng, correlation=p, dim=dim, num_sin=num_sin, scale=scale)
    x = rng.standard_normal((n_samples, dim)).astype(np.float32)
    x64 = x.astype(np.float64)
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(dim)])
    for name, w in (("y1", tasks.w1), ("y2", tasks.w2)):
        y = _mmoe_response(x64, w, tasks.alpha, tasks.beta)
        y = y + noise_std * rng.standard_normal(n_samples)
        frame[name] = (y > np.median(y)).astype(np.int64) if binary else y
    return frame
