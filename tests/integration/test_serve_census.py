"""The census MMoE example, one epoch, exported to ONNX and served (slow; runs in CI):
`polytask predict --backend onnx` equals `polytask predict` on the test split, and a served
model answers rows of the test split as `predict` does."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from polytask import MultiTaskModel
from polytask.cli import main
from polytask.run import load_run_split

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "census_mmoe.yaml"
TOL = 1e-5


@pytest.mark.slow
def test_census_mmoe_onnx_predictions_and_served_predictions_equal_torch(
    tmp_path: Path, census_test_file: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", str(EXAMPLE), "--out", str(run), f"data.path={census_test_file}"]
    assert main([*args, "training.epochs=1"]) == 0
    model_dir = run / "model"
    assert main(["export", str(model_dir), "--format", "onnx"]) == 0

    torch_csv, onnx_csv = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    assert main(["predict", str(model_dir), "--split", "test", "-o", str(torch_csv)]) == 0
    onnx_args = ["predict", str(model_dir), "--split", "test", "-o", str(onnx_csv)]
    assert main([*onnx_args, "--backend", "onnx"]) == 0
    by_torch, by_onnx = pd.read_csv(torch_csv), pd.read_csv(onnx_csv)
    assert len(by_torch) == 9976 and list(by_torch.columns) == ["income", "marital"]
    for col in by_torch.columns:
        np.testing.assert_allclose(by_onnx[col], by_torch[col], rtol=0, atol=TOL, err_msg=col)

    # Served, from the onnx graph: rows of the test split as a client sends them.
    test = load_run_split(run, "test").head(300)
    model = MultiTaskModel.load(model_dir)
    features = model.config.features.columns
    rows = json.loads(test[features].to_json(orient="records"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "polytask", "serve", str(model_dir), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--backend", "onnx"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start in 120 s"
                time.sleep(0.2)
        expected = model.predict(test)
        for start in range(0, len(rows), 100):
            got = httpx.post(f"{url}/predict", json={"rows": rows[start : start + 100]}, timeout=60)
            assert got.status_code == 200, got.text
            served = pd.DataFrame(got.json()["predictions"])
            for col in expected.columns:
                np.testing.assert_allclose(
                    served[col], expected[col].iloc[start : start + 100], rtol=0, atol=TOL
                )
        bad = dict(rows[0], age="forty")
        response = httpx.post(f"{url}/predict", json={"rows": [bad]})
        assert response.status_code == 422 and "'age'" in response.json()["detail"]
        assert httpx.get(f"{url}/health").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
