"""`polytask serve` as a client sees it: a real server process on 127.0.0.1, a real HTTP
client, responses compared with `MultiTaskModel.predict`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from polytask import MultiTaskModel
from polytask.cli import main
from polytask.export import export_onnx
from polytask.modelfile import FORMAT_VERSION
from polytask.serve import RequestError, Service

TOL = 1e-5
MAX_ROWS = 50


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.integers(0, 6, n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n) * 3 + 1,
        }
    )
    df["click"] = (1.5 * df.x + (df.color == "red") + rng.normal(size=n) > 0.5).astype(int)
    df["dwell"] = 2.0 * df.x + 0.5 * df["size"] + rng.normal(size=n)
    df["kind"] = np.where(df.x > 0.5, "a", np.where(df.x < -0.5, "c", "b"))
    return df


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved MMoE with a binary, a regression and a multiclass task, and its ONNX graph."""
    model = MultiTaskModel(
        features={"categorical": ["color", "size"], "numeric": ["x", "z"]},
        tasks={
            "click": {"type": "binary"},
            "dwell": {"type": "regression"},
            "kind": {"type": "multiclass"},
        },
        model={"name": "mmoe", "num_experts": 3, "expert_units": [16], "tower_units": [8]},
        training={"epochs": 1, "batch_size": 128, "progress": False},
    ).fit(_frame(600, 0))
    folder = model.save(tmp_path_factory.mktemp("serve") / "model")
    export_onnx(model, folder / "model.onnx")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(folder: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "polytask", "serve", str(folder), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded 2-core machine imports torch slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}: {out}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not answer /health within 120 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", params=["torch", "onnx-2-workers"])
def server(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[tuple[str, str]]:
    """(url, backend): torch in one process; onnx in two worker processes."""
    backend = "torch" if request.param == "torch" else "onnx"
    extra = ["--workers", "2"] if backend == "onnx" else []
    proc, url = _start(model_dir, "--backend", backend, "--max-rows", str(MAX_ROWS), *extra)
    yield url, backend
    _stop(proc)
    assert proc.returncode is not None


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def _assert_matches(predictions: list[dict[str, Any]], expected: pd.DataFrame) -> None:
    assert len(predictions) == len(expected)
    got = pd.DataFrame(predictions)
    assert list(got.columns) == list(expected.columns)
    for col in expected.columns:
        if pd.api.types.is_numeric_dtype(expected[col]):
            np.testing.assert_allclose(got[col], expected[col], rtol=0, atol=TOL, err_msg=col)
        else:
            assert got[col].tolist() == expected[col].tolist(), col


def test_predictions_equal_predict_in_input_order(server: tuple[str, str], model_dir: Path) -> None:
    url, _ = server
    model = MultiTaskModel.load(model_dir)
    test = _frame(40, 7)
    test.loc[3, "color"] = "purple"  # unseen: the unknown index, as in predict
    test.loc[4, "x"] = None  # missing: imputed, as in predict
    rows = _rows(test.drop(columns=["click", "dwell", "kind"]))
    rows[5]["extra"] = "ignored"  # a column the model does not read is ignored
    response = httpx.post(f"{url}/predict", json={"rows": rows}, timeout=30)
    assert response.status_code == 200, response.text
    _assert_matches(response.json()["predictions"], model.predict(test))
    # one row at a time gives the same as in a batch
    for i in (0, 3):
        one = httpx.post(f"{url}/predict", json={"rows": [rows[i]]}, timeout=30).json()
        _assert_matches(one["predictions"], model.predict(test.iloc[[i]]))
    assert httpx.post(f"{url}/predict", json={"rows": []}).json() == {"predictions": []}


def test_health_and_metadata(server: tuple[str, str]) -> None:
    url, backend = server
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    meta = httpx.get(f"{url}/metadata").json()
    assert meta["model"] == "mmoe" and meta["backend"] == backend
    assert meta["features"] == {
        "color": "categorical",
        "size": "categorical",
        "x": "numeric",
        "z": "numeric",
    }
    assert meta["tasks"] == {
        "click": {"type": "binary"},
        "dwell": {"type": "regression"},
        "kind": {"type": "multiclass", "classes": ["a", "b", "c"]},
    }
    assert meta["outputs"] == ["click", "dwell", "kind", "kind.proba.a", "kind.proba.b",
                               "kind.proba.c"]  # fmt: skip
    assert meta["format_version"] == FORMAT_VERSION and meta["max_rows"] == MAX_ROWS
    assert meta["polytask_version"] == meta["model_polytask_version"]


ROW = {"color": "red", "size": 2, "x": 0.5, "z": 1.0}
BAD_REQUESTS: list[tuple[str, bytes, int, str]] = [
    ("malformed JSON", b'{"rows": [', 400, "malformed JSON"),
    ("not JSON text", b"\xff\xfe", 400, "malformed JSON"),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("no rows key", b'{"data": []}', 422, "expected a JSON object"),
    ("rows not a list", b'{"rows": {"color": "red"}}', 422, "expected a list of objects"),
    ("row not an object", b'{"rows": [[1, 2]]}', 422, "row 0: expected an object"),
    (
        "unknown column set",
        json.dumps({"rows": [ROW, {"colour": "red", "length": 2}]}).encode(),
        422,
        "row 1: missing feature column(s) ['color', 'size', 'x', 'z']",
    ),
    (
        "string in a numeric column",
        json.dumps({"rows": [ROW, {**ROW, "x": "tall"}]}).encode(),
        422,
        "numeric column 'x' has non-numeric values such as ['tall']",
    ),
    (
        "object in a column",
        json.dumps({"rows": [{**ROW, "color": {"r": 1}}]}).encode(),
        422,
        "row 0: column 'color' holds an object",
    ),
    (
        "over the row limit",
        json.dumps({"rows": [ROW] * (MAX_ROWS + 1)}).encode(),
        413,
        f"too many rows: {MAX_ROWS + 1}; this server takes at most {MAX_ROWS}",
    ),
]


@pytest.mark.parametrize(("what", "body", "status", "reason"), BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])  # fmt: skip
def test_bad_requests_get_a_4xx_with_one_line_and_the_server_stays_up(
    server: tuple[str, str], what: str, body: bytes, status: int, reason: str
) -> None:
    url, _ = server
    response = httpx.post(
        f"{url}/predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, (what, response.text)
    detail = response.json()["detail"]
    assert reason in detail and "\n" not in detail
    assert httpx.get(f"{url}/health").status_code == 200
    ok = httpx.post(f"{url}/predict", json={"rows": [ROW]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_the_service_checks_without_a_socket(model_dir: Path) -> None:
    service = Service(model_dir, max_rows=3)
    with pytest.raises(RequestError) as err:
        service.predict(json.dumps({"rows": [ROW] * 4}).encode())
    assert err.value.status == 413
    out = service.predict(json.dumps({"rows": [ROW, {**ROW, "z": None}]}).encode())
    assert [set(p) for p in out["predictions"]] == [set(service.outputs)] * 2


def test_a_folder_that_cannot_be_loaded_fails_before_serving(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "config.yaml").write_text("features: !!python/object/apply:os.system ['echo hi']\n")
    assert main(["serve", str(bad)]) == 2
    assert "config.yaml: 54 bytes, polytask.json lists" in capsys.readouterr().err
    (bad / "config.yaml").write_bytes((model_dir / "config.yaml").read_bytes())
    (bad / "model.onnx").write_bytes(b"junk")
    assert main(["serve", str(bad), "--backend", "onnx"]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err


def test_serve_env_does_not_leak_into_this_process() -> None:
    assert "POLYTASK_SERVE_OPTIONS" not in os.environ


def test_the_row_encoder_encodes_as_the_preprocessor(model_dir: Path) -> None:
    """The direct JSON-row encoding equals `Preprocessor.transform` of the table built from
    the same rows, for every value type it takes; any other value sends the request down the
    table path (None)."""
    service = Service(model_dir)
    pre = service.model.preprocessor_
    rows = [
        {"color": "red", "size": 2, "x": 0.5, "z": 1},
        {"color": "purple", "size": True, "x": -3, "z": None},  # unseen, a bool, int, null
        {"color": None, "size": 10**15, "x": 1e300, "z": -0.0},  # huge int and float
        {"color": "", "size": -1, "x": float("inf"), "z": float("nan")},  # inf/NaN: missing
        {"color": "blue", "size": None, "x": 2**62, "z": 7},
    ]
    for row in rows:  # each row alone (one dtype per column) and all rows together
        for batch in ([row], rows):
            fast = service.encoder.encode(batch)
            assert fast is not None
            table = pre.transform(pd.DataFrame.from_records(batch, columns=service.columns))
            assert torch.equal(fast.categorical, table.categorical), batch
            assert torch.equal(fast.numeric, table.numeric), batch
    for odd in ({"size": 2.0}, {"size": 2**60}, {"x": "3.5"}, {"x": True}, {"color": 1.5}):
        assert service.encoder.encode([{**rows[0], **odd}]) is None, odd
    # ... and that path predicts what predict does: "3.5" as text is read as a number
    out = service.predict(json.dumps({"rows": [{**rows[0], "x": "3.5"}]}).encode())
    expected = service.model.predict(pd.DataFrame([{**rows[0], "x": 3.5}]))
    _assert_matches(out["predictions"], expected)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_fused_score_is_served_ranked_within_the_group(tmp_path: Path, backend: str) -> None:
    """A model with a decision.score answers a "score" per row as predict does, with the
    rank transform taken within each row's decision.group (a column the model does not
    read as a feature), on the direct and on the table path."""
    df = _frame(400, 1)
    df["user"] = np.arange(len(df)) % 7
    model = MultiTaskModel(
        features={"categorical": ["color", "size"], "numeric": ["x", "z"]},
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        training={"epochs": 1, "progress": False},
        decision={
            "group": "user",
            "score": {
                "form": "sum",
                "weights": {"click": 1.0, "dwell": 0.5},
                "transforms": {"dwell": "rank"},
            },
        },
    ).fit(df)
    folder = model.save(tmp_path / "m")
    export_onnx(model, folder / "model.onnx")
    service = Service(folder, backend=backend)
    assert "score" in service.outputs
    test = _frame(30, 2)
    test["user"] = [f"u{i % 3}" for i in range(len(test))]
    expected = model.predict(test)
    rows = _rows(test.drop(columns=["click", "dwell", "kind"]))
    _assert_matches(service.predict(json.dumps({"rows": rows}).encode())["predictions"], expected)
    rows[0]["x"] = str(rows[0]["x"])  # text in a numeric column: the table path
    _assert_matches(service.predict(json.dumps({"rows": rows}).encode())["predictions"], expected)
