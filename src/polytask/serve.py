"""``polytask serve``: a model folder behind HTTP.

``POST /predict`` takes ``{"rows": [{column: value, ...}, ...]}`` (raw values, as in the
training table) and answers ``{"predictions": [{column: value, ...}, ...]}`` in input order,
with the columns of `MultiTaskModel.predict`; ``GET /health``; ``GET /metadata``. A request
that is not valid (malformed JSON, a row without a feature column, text in a numeric column,
more rows than ``max_rows``) gets a 4xx with ``{"detail": "<one-line reason>"}``; nothing a
client sends stops the server. Unknown categories map to the unknown index, as in predict.

The stack is Starlette on uvicorn, the ASGI toolkit and server FastAPI itself runs on:
established, with worker processes (``--workers``), and without FastAPI's pydantic request
models, whose 422 answers are lists of errors where we want one line: the body is parsed
and checked here (`Service.rows`), which is also what lets the checks be tested without a
socket. Starlette, uvicorn and onnxruntime are the optional extra ``polytask[serve]``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polytask._version import __version__
from polytask.errors import DataError, PolytaskError

DEFAULT_MAX_ROWS = 1000
INLINE_BYTES = 16_384
"""Request bodies up to this size (a few rows) are answered on the event loop: the model
takes about a millisecond for them, less than the hop to a worker thread and back."""
_ENV = "POLYTASK_SERVE_OPTIONS"  # the options a worker process reads (uvicorn --workers)


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Service:
    """The model a server answers with: loaded by `MultiTaskModel.load` (which runs no code
    from the folder), its ONNX graph for ``backend="onnx"`` (``MODEL_DIR/model.onnx`` unless
    ``onnx_file`` is given, refused unless exported from the folder's weights)."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        backend: str = "torch",
        onnx_file: str | os.PathLike[str] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        threads: int | None = 1,
    ) -> None:
        import torch

        from polytask import modelfile
        from polytask.estimator import MultiTaskModel
        from polytask.export import CONTRACT_VERSION, ONNX_FILE, check_backend, graph_for

        check_backend(backend)
        if max_rows < 1:
            raise PolytaskError(f"max_rows: expected at least 1, found {max_rows}")
        if threads:
            torch.set_num_threads(threads)
        folder = Path(model_dir)
        self.model = MultiTaskModel.load(folder)
        lists = [f.name for f in self.model.config.features.lists]
        if lists:
            raise PolytaskError(
                f"{str(folder)!r}: list-valued feature(s) {lists} cannot be served yet (a JSON "
                "row holds one value per column); predict on a table with polytask predict"
            )
        self.backend = backend
        self.graph = None
        if backend == "onnx":
            path = Path(onnx_file) if onnx_file is not None else folder / ONNX_FILE
            self.graph = graph_for(self.model, path, threads=threads)
        self.max_rows = max_rows
        features = self.model.config.features
        self.kinds = {f.name: "categorical" for f in features.categorical}
        self.kinds.update({f.name: "numeric" for f in features.numeric})
        self.columns = list(self.kinds)
        self._required = frozenset(self.columns)
        self.encoder = RowEncoder(self.model.preprocessor_)
        meta_file = folder / modelfile.META  # read and verified by load just above
        meta = modelfile.parse_json(
            meta_file, modelfile.read_regular(meta_file, modelfile.SIZE_CAPS[modelfile.META])
        )
        empty = self.model.predict(pd.DataFrame({c: [] for c in self.columns}))
        self.outputs = [str(c) for c in empty.columns]
        classes = self.model.preprocessor_.classes_
        self._metadata = {
            "model": self.model.config.model.name,
            "tasks": {
                name: {"type": t.type, **({"classes": classes[name]} if name in classes else {})}
                for name, t in self.model.config.tasks.items()
            },
            "features": self.kinds,
            "outputs": self.outputs,
            "backend": backend,
            "max_rows": max_rows,
            "polytask_version": __version__,
            "model_polytask_version": meta.get("polytask_version"),
            "format_version": meta.get("format_version"),
            **({"onnx_contract_version": CONTRACT_VERSION} if backend == "onnx" else {}),
        }

    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def rows(self, body: bytes) -> list[dict[str, Any]]:
        """The request body's rows, checked to hold every feature column, or a
        `RequestError`."""
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(400, f"malformed JSON: {err}") from None
        except RecursionError:
            raise RequestError(400, "malformed JSON: nested too deeply") from None
        if not isinstance(payload, dict) or "rows" not in payload:
            found = "an object without 'rows'" if isinstance(payload, dict) else _kind(payload)
            raise RequestError(422, f'expected a JSON object {{"rows": [...]}}, found {found}')
        rows = payload["rows"]
        if not isinstance(rows, list):
            raise RequestError(422, f"'rows': expected a list of objects, found {_kind(rows)}")
        if len(rows) > self.max_rows:
            raise RequestError(
                413, f"too many rows: {len(rows)}; this server takes at most {self.max_rows}"
            )
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(
                    422, f"row {i}: expected an object {{column: value}}, found {_kind(row)}"
                )
            if not self._required <= row.keys():
                missing = [c for c in self.columns if c not in row]
                raise RequestError(
                    422,
                    f"row {i}: missing feature column(s) {missing[:10]}"
                    f"{' ...' if len(missing) > 10 else ''}; the model reads {self.columns}",
                )
            for column in self.columns:
                value = row[column]
                if isinstance(value, dict | list):
                    raise RequestError(
                        422,
                        f"row {i}: column {column!r} holds {_kind(value)}; expected a "
                        f"{'number' if self.kinds[column] == 'numeric' else 'value'} or null",
                    )
        return rows

    def predict(self, body: bytes) -> dict[str, list[dict[str, Any]]]:
        """``{"predictions": [...]}`` for a request body, one entry per row in input order."""
        rows = self.rows(body)
        encoded = self.encoder.encode(rows)
        # The fused score ranks within decision.group when the rows carry that column.
        group = self.model.config.decision.group
        grouped = group is not None and any(group in row for row in rows)
        try:
            if encoded is not None:
                groups = None
                if grouped:
                    groups = pd.DataFrame.from_records(rows, columns=[group])[group].to_numpy()
                index = pd.RangeIndex(len(rows))
                frame = self.model._predict_encoded(encoded, index, self.graph, groups)
            else:  # a value only the table path reads as predict does (text in a numeric column)
                columns = list(self.columns)
                if group is not None and grouped and group not in self.kinds:
                    columns.append(group)
                df = pd.DataFrame.from_records(rows, columns=columns)
                frame = self.model._predict_frame(df, self.graph)
        except DataError as err:
            raise RequestError(422, str(err).removeprefix("prediction data: ")) from None
        return {"predictions": _records(frame)}


class RowEncoder:
    """JSON rows straight to the encoded tensors, as `Preprocessor.transform` encodes the
    table built from them, for the value types JSON rows usually hold: per value a dict
    lookup or a float, no DataFrame (which costs milliseconds per request for 40 columns).

    Categorical values that are strings, booleans, integers below 2**53 in magnitude or null
    take this path; so do numeric values that are numbers (booleans excepted) or null. Any
    other value (a float in a categorical column, text in a numeric one) makes `encode`
    return None, and the request goes through the table path, whose reading (and errors)
    are `predict`'s. tests/test_serve.py checks the two agree on every value type."""

    def __init__(self, pre: Any) -> None:
        assert pre.vocabularies_ is not None
        # a hashed column has no vocabulary: its rows take the table path
        self.hashed = any(f.hash_buckets is not None for f in pre.features.single)
        self.categorical = [
            (f.name, {v: i + 2 for i, v in enumerate(pre.vocabularies_.get(f.name, []))})
            for f in pre.features.single
        ]
        self.numeric = [(f.name, pre.numeric_stats_[f.name]) for f in pre.features.numeric]

    def encode(self, rows: list[dict[str, Any]]) -> Any:
        from polytask.data.preprocess import (
            MISSING_INDEX,
            UNKNOWN_INDEX,
            _encoded,
            _scaled,
        )

        if self.hashed:
            return None
        cat = np.empty((len(rows), len(self.categorical)), dtype=np.int64)
        for j, (name, index) in enumerate(self.categorical):
            for i, row in enumerate(rows):
                v = row[name]
                t = type(v)
                if v is None:
                    cat[i, j] = MISSING_INDEX
                elif t is str or t is bool or (t is int and -(2**53) < v < 2**53):
                    cat[i, j] = index.get(str(v), UNKNOWN_INDEX)  # str(True) is "True"
                else:
                    return None
        scaled = []
        for name, stats in self.numeric:
            arr = np.empty(len(rows), dtype=np.float64)
            for i, row in enumerate(rows):
                v = row[name]
                t = type(v)
                if v is None:
                    arr[i] = np.nan
                elif t is float or (t is int and -(2**63) <= v < 2**63):
                    arr[i] = v
                else:
                    return None
            arr[~np.isfinite(arr)] = np.nan
            if stats.log1p:
                arr = np.sign(arr) * np.log1p(np.abs(arr))
            scaled.append(_scaled(arr, np.isnan(arr), stats))
        return _encoded(cat, scaled, {}, {})


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: plain Python numbers and strings, null for NaN."""
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_float_dtype(col):
            arr = col.to_numpy(dtype=np.float64)
            values: list[Any] = arr.tolist()
            if not np.isfinite(arr).all():
                values = [v if math.isfinite(v) else None for v in values]
        else:
            values = [None if v is None else str(v) for v in col.tolist()]
        columns[str(name)] = values
    names = list(columns)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*columns.values(), strict=True)]


def create_app(service: Service) -> Any:
    """The ASGI app answering with ``service``."""
    from polytask.export import require

    require("starlette")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def _json(content: Any, status: int = 200) -> Response:
        body = json.dumps(content, separators=(",", ":"), allow_nan=False)
        return Response(body, status_code=status, media_type="application/json")

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def metadata(request: Request) -> Response:
        return _json(service.metadata())

    async def predict(request: Request) -> Response:
        body = await request.body()
        try:
            if len(body) <= INLINE_BYTES:
                result = service.predict(body)
            else:  # in a worker thread, so /health answers while a large request runs
                result = await run_in_threadpool(service.predict, body)
        except RequestError as err:
            return _json({"detail": err.reason}, err.status)
        return _json(result)

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metadata", metadata, methods=["GET"]),
            Route("/predict", predict, methods=["POST"]),
        ]
    )


def app_from_env() -> Any:
    """The app of a uvicorn worker process: its options come from the parent in
    ``$POLYTASK_SERVE_OPTIONS``."""
    options = json.loads(os.environ[_ENV])
    return create_app(Service(**options))


def serve(
    model_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "torch",
    onnx_file: str | os.PathLike[str] | None = None,
    workers: int = 1,
    max_rows: int = DEFAULT_MAX_ROWS,
    threads: int | None = 1,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted. The folder is loaded (and checked) here first, so
    a bad folder fails before any port is opened, with one error line."""
    from polytask.export import require

    uvicorn = require("uvicorn")
    options: Mapping[str, Any] = {
        "model_dir": str(model_dir),
        "backend": backend,
        "onnx_file": None if onnx_file is None else str(onnx_file),
        "max_rows": max_rows,
        "threads": threads,
    }
    if workers < 1:
        raise PolytaskError(f"workers: expected at least 1, found {workers}")
    service = Service(**options)
    common = {"host": host, "port": port, "log_level": log_level, "access_log": False}
    if workers == 1:
        uvicorn.run(create_app(service), **common)
        return
    del service  # each worker process loads its own
    os.environ[_ENV] = json.dumps(options)
    uvicorn.run("polytask.serve:app_from_env", factory=True, workers=workers, **common)
