"""A fitted preprocessor kept in a folder of its own, to fit once and reuse across runs
(``polytask fit-preprocessor RUN.yaml -o DIR``, then ``data.preprocessor: DIR``).

The folder holds ``preprocessor.json`` (`Preprocessor.state_dict`, the file a model folder
has) and ``fitted.json``: the ``features`` and ``tasks`` it was fitted for, the rows it saw
and where they came from. Reading it back checks that the run's features and tasks are
those it was fitted for, so a vocabulary is never applied to another schema.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from os import PathLike
from pathlib import Path
from typing import Any

from polytask._atomic import atomic_dir
from polytask._version import __version__
from polytask.data.features import FeaturesConfig
from polytask.data.preprocess import Preprocessor
from polytask.errors import ConfigError, DataError
from polytask.tasks import TaskSpec

STATE = "preprocessor.json"
FITTED = "fitted.json"


def _schema(features: FeaturesConfig, tasks: dict[str, TaskSpec]) -> dict[str, Any]:
    """The sections a fit depends on, as plain JSON (fitted label scaling left out)."""
    fitted = ("label_shift", "label_scale")
    specs = {n: {k: v for k, v in asdict(s).items() if k not in fitted} for n, s in tasks.items()}
    out: dict[str, Any] = json.loads(
        json.dumps({"features": features.model_dump(mode="json"), "tasks": specs})
    )
    return out


def save_fitted(pre: Preprocessor, folder: str | PathLike[str], *, rows: int, source: str) -> Path:
    """Write ``pre`` (fitted) to ``folder`` atomically: it appears whole or not at all."""
    target = Path(folder)
    if target.exists() and not (
        target.is_dir() and (not any(target.iterdir()) or (target / FITTED).is_file())
    ):
        raise DataError(
            f"preprocessor folder {str(target)!r} exists and is not an empty or preprocessor "
            "folder; it would be replaced whole: choose another"
        )
    meta = {
        **_schema(pre.features, pre.specs),
        "rows": rows,
        "source": source,
        "polytask_version": __version__,
    }
    with atomic_dir(target) as tmp:
        (tmp / STATE).write_text(json.dumps(pre.state_dict(), indent=1), encoding="utf-8")
        (tmp / FITTED).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return target


def load_fitted(
    folder: str | PathLike[str], features: FeaturesConfig, tasks: dict[str, TaskSpec]
) -> Preprocessor:
    """The preprocessor saved in ``folder``, checked to be fitted for ``features`` and
    ``tasks``; a `ConfigError` names the section that differs."""
    path = Path(folder)
    files = [path / STATE, path / FITTED]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConfigError(
            f"data.preprocessor {str(path)!r}: no {missing[0]} there; write the folder with "
            "'polytask fit-preprocessor RUN.yaml -o DIR'"
        )
    try:
        state, meta = (json.loads(f.read_text(encoding="utf-8")) for f in files)
    except (OSError, ValueError) as err:
        raise DataError(f"data.preprocessor {str(path)!r}: cannot read it: {err}") from None
    expected = _schema(features, tasks)
    for key in ("features", "tasks"):
        if not isinstance(meta, dict) or meta.get(key) != expected[key]:
            raise ConfigError(
                f"data.preprocessor {str(path)!r} was fitted for other {key} than this run's; "
                "fit it again for this run file (polytask fit-preprocessor)"
            )
    try:
        return Preprocessor(features=features, tasks=tasks).load_state_dict(state)
    except DataError as err:
        raise DataError(f"data.preprocessor {str(path)!r}: {err}") from None
