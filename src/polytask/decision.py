"""From several task predictions to one ranking score, and choosing its weights.

A feed or an auction ranks by one number. The fused score combines each task's prediction
``y_t`` after a per-task transform ``f_t``:

- ``product``: prod_t f_t(y_t)^w_t, computed in log space as exp(sum_t w_t log f_t(y_t)) so
  that many small factors do not underflow (f_t is floored at 1e-12 before the log);
- ``sum``: sum_t w_t f_t(y_t).

Transforms: ``prob`` (a binary task's probability; the default for binary tasks), ``value``
(the predicted value; the default for regression and count tasks), ``log`` (log of the value,
floored at 1e-12), ``rank`` (the prediction's rank within its group divided by the group's
size, in (0, 1]; over the whole table when there is no group column).

Ranking by the product form is unchanged when every weight is multiplied by the same positive
number, so weights are searched on the simplex (they sum to 1). ``search_weights`` draws
candidates at random from a seeded Dirichlet(1, ..., 1) and always adds each task alone and the
uniform point, scores every candidate's ranking on every KPI, and marks the Pareto front
(:func:`pareto_front`). Random search was chosen over Optuna's multi-objective samplers
because a candidate is cheap (one vectorised grouped evaluation), the front must cover the
whole trade-off rather than converge on one region, and the search must be exactly
reproducible from its seed with no extra dependency.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FORMS = ("product", "sum")
TRANSFORMS = ("prob", "value", "log", "rank")
DEFAULT_TRANSFORM = {"binary": "prob", "regression": "value", "count": "value"}
_FLOOR = 1e-12


@dataclass
class ScoreSpec:
    """How task predictions become one score: a form, a weight and a transform per task."""

    form: str = "product"
    weights: dict[str, float] = field(default_factory=dict)
    transforms: dict[str, str] = field(default_factory=dict)

    def check(self, task_types: Mapping[str, str]) -> None:
        """Raise ValueError naming the first bad entry against the model's tasks."""
        if self.form not in FORMS:
            raise ValueError(
                f"decision.score.form: expected one of {list(FORMS)}, found {self.form!r}"
            )
        if not self.weights:
            raise ValueError("decision.score.weights: give a weight for at least one task")
        for where, names in (("weights", self.weights), ("transforms", self.transforms)):
            for name in names:
                if name not in task_types:
                    raise ValueError(
                        f"decision.score.{where}: unknown task {name!r}; the model's tasks are "
                        f"{sorted(task_types)}"
                    )
        for name, w in self.weights.items():
            if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
                raise ValueError(
                    f"decision.score.weights.{name}: expected a finite number >= 0, found {w!r}"
                )
            kind = task_types[name]
            if kind not in DEFAULT_TRANSFORM:
                raise ValueError(
                    f"decision.score.weights.{name}: a {kind} task has no single score to fuse"
                )
        for name, t in self.transforms.items():
            if t not in TRANSFORMS:
                raise ValueError(
                    f"decision.score.transforms.{name}: expected one of {list(TRANSFORMS)}, "
                    f"found {t!r}"
                )
            if t == "prob" and task_types[name] != "binary":
                raise ValueError(
                    f"decision.score.transforms.{name}: 'prob' is for binary tasks, "
                    f"{name!r} is {task_types[name]}"
                )

    def transform(self, name: str, task_type: str) -> str:
        return self.transforms.get(name, DEFAULT_TRANSFORM.get(task_type, "value"))


def group_rank(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Rank of each value within its group (1 = smallest, ties averaged) over the group size."""
    s = pd.Series(np.asarray(values, dtype=np.float64))
    if groups is None:
        return s.rank(method="average").to_numpy() / max(len(s), 1)
    grouped = s.groupby(np.asarray(groups), sort=False)
    return (grouped.rank(method="average") / grouped.transform("size")).to_numpy()


def _factor(values: np.ndarray, transform: str, groups: np.ndarray | None) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if transform in ("prob", "value"):
        return v
    if transform == "log":
        return np.log(np.maximum(v, _FLOOR))
    return group_rank(v, groups)


def fused_score(
    predictions: Mapping[str, np.ndarray],
    spec: ScoreSpec,
    task_types: Mapping[str, str],
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """The fused score of every row (float64); see the module docstring for the forms."""
    spec.check(task_types)
    total: np.ndarray | None = None
    for name, w in spec.weights.items():
        f = _factor(predictions[name], spec.transform(name, task_types[name]), groups)
        term = w * (np.log(np.maximum(f, _FLOOR)) if spec.form == "product" else f)
        total = term if total is None else total + term
    assert total is not None
    return np.exp(total) if spec.form == "product" else total


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``points`` [n, m] that no other row dominates (every
    column is maximised: at least as good in all and better in one). NaN rows are never on
    the front."""
    p = np.asarray(points, dtype=np.float64)
    valid = np.asarray(~np.isnan(p).any(axis=1), dtype=bool)
    front = np.array(valid, dtype=bool)
    others = p[valid]
    for i in np.flatnonzero(valid):
        dominated = np.all(others >= p[i], axis=1) & np.any(others > p[i], axis=1)
        front[i] = not dominated.any()
    return front


_CONSTRAINT = re.compile(r"^\s*([^\s<>=]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*(%?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``<task>.<metric> >= value`` (or ``<=``); with ``relative`` the value is a percentage
    of the KPI that the task's own score reaches when ranking alone."""

    kpi: str
    op: str
    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Constraint:
        m = _CONSTRAINT.match(text)
        if not m:
            raise ValueError(
                f"--subject-to {text!r}: expected '<task>.<metric> >= <value>' or "
                "'<task>.<metric> >= <percent>%' (a percentage of the task's own ranking)"
            )
        kpi, op, number, pct = m.groups()
        return cls(kpi, op, float(number), pct == "%")

    def bound(self, own: Mapping[str, float]) -> float:
        if not self.relative:
            return self.value
        return self.value / 100.0 * own[self.kpi]

    def holds(self, value: float, own: Mapping[str, float]) -> bool:
        b = self.bound(own)
        return bool(value >= b) if self.op == ">=" else bool(value <= b)

    def __str__(self) -> str:
        return f"{self.kpi} {self.op} {self.value:g}{'%' if self.relative else ''}"


def simplex_candidates(tasks: Sequence[str], trials: int, seed: int) -> list[dict[str, float]]:
    """Each task alone, the uniform point, then ``trials`` seeded Dirichlet(1) draws."""
    n = len(tasks)
    points = [np.eye(n)[i] for i in range(n)] + [np.full(n, 1.0 / n)]
    points += list(np.random.default_rng(seed).dirichlet(np.ones(n), size=trials))
    return [{t: float(w) for t, w in zip(tasks, p, strict=True)} for p in points]


def search_weights(
    evaluate: Callable[[dict[str, float]], dict[str, float]],
    tasks: Sequence[str],
    *,
    maximize: str,
    constraints: Sequence[Constraint] = (),
    front_kpis: Sequence[str],
    own: Mapping[str, float],
    trials: int = 200,
    seed: int = 0,
) -> tuple[pd.DataFrame, int]:
    """Score every candidate; return the table (weights, KPIs, ``feasible``, ``pareto``,
    ``chosen``) and the chosen row: the feasible candidate with the highest ``maximize``.

    ``evaluate`` maps weights to KPIs. Raises ValueError naming the constraint that binds
    (and the best value any candidate reached for it) when no candidate satisfies them all.
    """
    rows = []
    for weights in simplex_candidates(tasks, trials, seed):
        kpis = evaluate(weights)
        for name in [maximize, *(c.kpi for c in constraints), *front_kpis]:
            if name not in kpis:
                raise ValueError(
                    f"unknown KPI {name!r}; the KPIs of this model and table are {sorted(kpis)}"
                )
        rows.append({**{f"w.{t}": w for t, w in weights.items()}, **kpis})
    table = pd.DataFrame(rows)
    holds = [np.array([c.holds(v, own) for v in table[c.kpi]]) for c in constraints]
    feasible = np.logical_and.reduce([np.ones(len(table), dtype=bool), *holds])
    table["feasible"] = feasible
    table["pareto"] = pareto_front(table[list(dict.fromkeys(front_kpis))].to_numpy())
    if not feasible.any():
        binding = [c for c, ok in zip(constraints, holds, strict=True) if not ok.any()]
        if not binding:
            raise ValueError(
                "no candidate satisfies every constraint at once: "
                + ", ".join(str(c) for c in constraints)
                + f"; try more --trials (tried {len(table)})"
            )
        c = binding[0]
        values = table[c.kpi].to_numpy(dtype=np.float64)
        best = np.nanmax(values) if c.op == ">=" else np.nanmin(values)
        raise ValueError(
            f"no candidate satisfies {c} (bound {c.bound(own):.6g}); the best {c.kpi} found "
            f"was {best:.6g} over {len(table)} candidates"
        )
    score = np.where(feasible, table[maximize].to_numpy(dtype=np.float64), -np.inf)
    score = np.where(np.isnan(score), -np.inf, score)
    chosen = int(np.argmax(score))
    table["chosen"] = np.arange(len(table)) == chosen
    return table, chosen
