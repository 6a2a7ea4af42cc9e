"""`polytask decide`: choose the fused score's weights on the trade-off between KPIs.

Given a fitted model and a labelled table with a group column, every candidate weighting
(`polytask.decision.simplex_candidates`) ranks each group's rows by its fused score, and every
task's grouped metrics under that ranking are its KPIs (``<task>.gauc``, ``<task>.ndcg@k``,
``<task>.recall@k`` for binary tasks, ``<task>.ndcg@k`` for regression and count tasks). The
candidate with the best ``maximize`` KPI among those meeting every ``subject_to`` constraint is
chosen and saved as the model's ``decision.score``, so `predict` writes its ``score`` column.
``front.csv`` (every candidate, its KPIs, feasibility, Pareto flag, the chosen one) and
``front.png`` go to ``MODEL_DIR/decision/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polytask.config import ScoreConfig
from polytask.data import read_table
from polytask.decision import Constraint, ScoreSpec, fused_score, search_weights
from polytask.errors import ConfigError, DataError, MissingExtraError
from polytask.estimator import MultiTaskModel


@dataclass
class Decision:
    """What `decide` found: every candidate, the chosen weights and their KPIs, and the KPIs
    of each task's own ranking (for reference)."""

    table: pd.DataFrame
    weights: dict[str, float]
    kpis: dict[str, float]
    own: dict[str, dict[str, float]]
    front_kpis: list[str]
    maximize: str


def decide(
    model: MultiTaskModel,
    data: Any,
    *,
    maximize: str,
    subject_to: Sequence[str] = (),
    trials: int = 200,
    seed: int = 0,
    form: str | None = None,
    group: str | None = None,
) -> Decision:
    """Search the fused score's weights on ``data``; see the module docstring. The model's
    ``decision`` settings are updated in memory (``model.config.decision``)."""
    if trials < 0:
        raise ConfigError(f"--trials: expected a number >= 0, found {trials}")
    constraints = [Constraint.parse(c) for c in subject_to]
    column = group or model.config.decision.group
    if column is None:
        raise ConfigError(
            "decide ranks rows within groups: set data.group (or decision.group) in the run "
            "file, or pass --group COLUMN"
        )
    frame = read_table(data, what="decision data")
    groups = model._group_column(frame, column, "decision data")
    encoded = model.encode(frame, labels=True, what="decision data")
    scores = model._task_scores(model._raw_outputs(encoded))
    labels = model._unscaled({k: v.cpu().numpy() for k, v in encoded.labels.items()})
    tasks = [t for t in scores if (~np.isnan(labels[t])).any()]
    if not tasks:
        raise DataError("decision data: no binary, regression or count task has labels here")
    k = model.config.decision.k
    types = model._task_types()
    current = model.config.decision.score
    form = form or (current.form if current is not None else "product")
    transforms: dict[str, str] = dict(current.transforms) if current is not None else {}

    def kpis_of(score: np.ndarray) -> dict[str, float]:
        found: dict[str, float] = {}
        for t in tasks:
            kpis = model._kpis(groups, score, labels[t], k)
            found.update({f"{t}.{m}": v for m, v in kpis.items()})
        return found

    own = {t: kpis_of(scores[t]) for t in tasks}
    own_kpi = {kpi: value for t in tasks for kpi, value in own[t].items() if kpi.startswith(t)}

    def evaluate(weights: dict[str, float]) -> dict[str, float]:
        return kpis_of(fused_score(scores, ScoreSpec(form, weights, transforms), types, groups))

    front = list(dict.fromkeys([maximize, *(c.kpi for c in constraints)]))
    if len(front) < 2:  # then each task's primary KPI too
        primary = [f"{t}.gauc" if types[t] == "binary" else f"{t}.ndcg@{k}" for t in tasks]
        front = list(dict.fromkeys([*front, *primary]))
    try:
        table, chosen = search_weights(
            evaluate,
            tasks,
            maximize=maximize,
            constraints=constraints,
            front_kpis=front,
            own=own_kpi,
            trials=trials,
            seed=seed,
        )
    except ValueError as err:
        raise ConfigError(f"decide: {err}") from None
    row = table.iloc[chosen]
    weights = {t: float(row[f"w.{t}"]) for t in tasks}
    kpis = {c: float(row[c]) for c in table.columns if "." in c and not c.startswith("w.")}
    model.config.decision.score = ScoreConfig.model_validate(
        {"form": form, "weights": weights, "transforms": transforms}
    )
    model.config.decision.group = column
    return Decision(table, weights, kpis, own, front, maximize)


def write_front(decision: Decision, folder: str | os.PathLike[str]) -> list[Path]:
    """``front.csv`` and ``front.png`` into ``folder`` (created); returns their paths."""
    from polytask._atomic import atomic_path
    from polytask.plots import pyplot, save

    try:
        plt = pyplot()
    except MissingExtraError:
        raise MissingExtraError(
            "polytask decide draws front.png with matplotlib: pip install 'polytask[plot]' "
            "(from a checkout: pip install -e '.[plot]')"
        ) from None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "front.csv", out / "front.png"
    with atomic_path(csv_path) as tmp:
        decision.table.to_csv(tmp, index=False)
    x, y = decision.front_kpis[0], decision.front_kpis[1]
    t = decision.table
    fig, ax = plt.subplots(figsize=(6.0, 4.5), dpi=100)
    ax.scatter(t[x], t[y], s=10, color="0.7", label="candidates")
    f = t[t["pareto"]].sort_values(x)
    ax.plot(f[x], f[y], "o-", color="tab:blue", ms=4, label="Pareto front")
    c = t[t["chosen"]]
    ax.scatter(c[x], c[y], marker="*", s=220, color="tab:red", zorder=5, label="chosen")
    for task, kpis in decision.own.items():
        if x in kpis and y in kpis:
            ax.scatter(kpis[x], kpis[y], marker="s", s=40, color="black", zorder=4)
            ax.annotate(
                f"{task} alone",
                (kpis[x], kpis[y]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"maximize {decision.maximize}")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return [csv_path, save(fig, png_path, dpi=100)]
