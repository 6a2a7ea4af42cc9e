from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polytask.datasets import mmoe_synthetic
from polytask.datasets._synthetic import _mmoe_response, _mmoe_tasks
from polytask.errors import DataError


def _weights(correlation: float, *, dim: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    tasks = _mmoe_tasks(
        np.random.default_rng(seed), correlation=correlation, dim=dim, num_sin=10, scale=1.0
    )
    return tasks.w1, tasks.w2


def test_columns_dtypes_and_shape() -> None:
    df = mmoe_synthetic(7, correlation=0.5, dim=4)
    assert list(df.columns) == ["x0", "x1", "x2", "x3", "y1", "y2"]
    assert df.shape == (7, 6)
    assert (df.dtypes.iloc[:4] == np.float32).all()
    assert df["y1"].dtype == np.float64 and df["y2"].dtype == np.float64


@pytest.mark.parametrize("correlation", [-1.0, -0.3, 0.0, 0.5, 0.9, 1.0])
def test_weight_cosine_is_the_correlation(correlation: float) -> None:
    w1, w2 = _weights(correlation)
    assert np.linalg.norm(w1) == pytest.approx(1.0, abs=1e-9)
    assert np.linalg.norm(w2) == pytest.approx(1.0, abs=1e-9)
    cosine = w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2))
    assert cosine == pytest.approx(correlation, abs=1e-6)


def test_scale_is_the_weight_norm() -> None:
    tasks = _mmoe_tasks(np.random.default_rng(3), correlation=0.2, dim=10, num_sin=2, scale=0.3)
    assert np.linalg.norm(tasks.w1) == pytest.approx(0.3)
    assert np.linalg.norm(tasks.w2) == pytest.approx(0.3)


def test_labels_follow_the_formula_without_noise() -> None:
    df = mmoe_synthetic(50, correlation=0.7, dim=6, num_sin=3, noise_std=0.0, seed=5)
    tasks = _mmoe_tasks(np.random.default_rng(5), correlation=0.7, dim=6, num_sin=3, scale=1.0)
    x = df[[f"x{j}" for j in range(6)]].to_numpy(np.float64)
    for name, w in (("y1", tasks.w1), ("y2", tasks.w2)):
        wx = x @ w
        expected = wx + sum(
            np.sin(a * wx + b) for a, b in zip(tasks.alpha, tasks.beta, strict=True)
        )
        np.testing.assert_allclose(df[name].to_numpy(), expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(_mmoe_response(x, w, tasks.alpha, tasks.beta), expected)


def test_correlation_one_without_noise_gives_identical_tasks() -> None:
    df = mmoe_synthetic(100, correlation=1.0, noise_std=0.0, dim=8)
    np.testing.assert_array_equal(df["y1"].to_numpy(), df["y2"].to_numpy())


def test_label_correlation_grows_with_p() -> None:
    corrs = [
        np.corrcoef(*mmoe_synthetic(5000, correlation=p, seed=1)[["y1", "y2"]].to_numpy().T)[0, 1]
        for p in (0.0, 0.5, 0.9, 1.0)
    ]
    assert corrs == sorted(corrs)
    assert corrs[-1] > 0.99
    assert corrs[1] < 0.9  # p = 0.5 is clearly below p = 1


def test_noise_std_is_the_residual_std() -> None:
    clean = mmoe_synthetic(20000, correlation=0.5, dim=5, noise_std=0.0, seed=2)
    noisy = mmoe_synthetic(20000, correlation=0.5, dim=5, noise_std=0.5, seed=2)
    pd.testing.assert_frame_equal(clean.iloc[:, :5], noisy.iloc[:, :5])
    residual = noisy["y1"] - clean["y1"]
    assert residual.std() == pytest.approx(0.5, rel=0.03)


def test_binary_thresholds_at_the_median() -> None:
    continuous = mmoe_synthetic(1000, correlation=0.5, dim=5, seed=4)
    binary = mmoe_synthetic(1000, correlation=0.5, dim=5, seed=4, binary=True)
    for name in ("y1", "y2"):
        assert binary[name].dtype == np.int64
        assert set(binary[name].unique()) == {0, 1}
        assert binary[name].sum() == 500
        expected = (continuous[name] > continuous[name].median()).astype(np.int64)
        pd.testing.assert_series_equal(binary[name], expected)


def test_same_seed_same_frame_and_different_seed_different_frame() -> None:
    a = mmoe_synthetic(20, correlation=0.5, dim=3, seed=9)
    pd.testing.assert_frame_equal(a, mmoe_synthetic(20, correlation=0.5, dim=3, seed=9))
    assert not a.equals(mmoe_synthetic(20, correlation=0.5, dim=3, seed=10))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"correlation": 1.5}, "correlation"),
        ({"correlation": -1.01}, "correlation"),
        ({"correlation": float("nan")}, "correlation"),
        ({"dim": 1}, "dim"),
        ({"num_sin": -1}, "num_sin"),
        ({"scale": 0.0}, "scale"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs: dict[str, object], argument: str) -> None:
    arguments: dict[str, object] = {"n_samples": 10, "correlation": 0.5} | kwargs
    with pytest.raises(DataError, match=rf"'{argument}' expected .*received"):
        mmoe_synthetic(**arguments)  # type: ignore[arg-type]
