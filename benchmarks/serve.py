"""Serving: `polytask serve` under a real HTTP client on loopback, and in-process batch
inference, torch eager against onnxruntime, on the census MMoE.

For each backend (torch, onnx) a server process is started on 127.0.0.1 (one worker, one
intra-op thread) and driven by httpx clients in threads, each its own keep-alive connection:

- latency of 1-row and of 100-row requests, one request at a time: p50 and p99 (client side,
  from send to parsed response), over ``--requests`` requests (a tenth of that for 100 rows);
- saturation: ``--concurrency`` clients posting 100-row requests back to back for
  ``--seconds`` seconds: rows/s and requests/s.

Then a ``--load-seconds`` concurrent-load run on the torch server reports the count of
non-200 (5xx) answers and the server's RSS at start and end. In process: rows/s of the
network alone on the encoded test split (torch eager under inference_mode vs an onnxruntime
session, the same thread count, batches of ``--batch``), and of `predict` end to end.

Every request goes to 127.0.0.1 only; every loop is bounded in count and time. The clients
share the machine with the server: on 2 cores their Python overhead is part of the figures.

    polytask train examples/census_mmoe.yaml training.epochs=1 --out runs/census_1epoch
    python benchmarks/serve.py --run runs/census_1epoch
    python benchmarks/serve.py --smoke          # a tiny synthetic model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import polytask
from polytask import MultiTaskModel
from polytask.export import export_onnx, graph_for

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "census_mmoe.yaml"


# ------------------------------------------------------------------------------------ server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`polytask serve` in a child process on 127.0.0.1, stopped on exit."""

    def __init__(self, model_dir: Path, backend: str, *, threads: int, start_timeout: float):
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "polytask", "serve", str(model_dir), "--port"]
        cmd += [str(self.port), "--backend", backend, "--threads", str(threads)]
        cmd += ["--max-rows", "1000", "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with status {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not answer /health in {start_timeout:.0f} s")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _percentile(ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(ms), q)) if ms else float("nan")


def _latency(url: str, bodies: list[bytes], warmup: int = 5) -> dict[str, float]:
    """One request at a time: p50/p99 in ms over ``bodies`` (after ``warmup`` unmeasured)."""
    import httpx

    times: list[float] = []
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60) as client:
        for i, body in enumerate(bodies[:warmup] + bodies):
            start = time.perf_counter()
            response = client.post(f"{url}/predict", content=body, headers=headers)
            response.json()
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text}")
            if i >= warmup:
                times.append(elapsed)
    return {"p50_ms": _percentile(times, 50), "p99_ms": _percentile(times, 99), "n": len(times)}


def _load(
    url: str, bodies: list[bytes], rows_per_body: int, *, concurrency: int, seconds: float,
    max_requests: int,
) -> dict[str, Any]:  # fmt: skip
    """``concurrency`` clients posting back to back for ``seconds`` (and at most
    ``max_requests`` in all): rows/s, requests/s, status counts, p50/p99."""
    import httpx

    lock = threading.Lock()
    statuses: dict[str, int] = {}
    times: list[float] = []
    sent = [0]
    stop_at = time.monotonic() + seconds
    headers = {"content-type": "application/json"}

    def client_loop(k: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = k
            while time.monotonic() < stop_at:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    sent[0] += 1
                start = time.perf_counter()
                try:
                    response = client.post(
                        f"{url}/predict", content=bodies[i % len(bodies)], headers=headers
                    )
                    key = str(response.status_code)
                except httpx.HTTPError as err:
                    key = type(err).__name__
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    statuses[key] = statuses.get(key, 0) + 1
                    times.append(elapsed)
                i += concurrency

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ok = statuses.get("200", 0)
    return {
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "server_errors": sum(v for k, v in statuses.items() if not k.startswith(("2", "4"))),
        "requests_per_s": ok / elapsed,
        "rows_per_s": ok * rows_per_body / elapsed,
        "p50_ms": _percentile(times, 50),
        "p99_ms": _percentile(times, 99),
    }


def _bodies(rows: list[dict[str, Any]], size: int, count: int) -> list[bytes]:
    """``count`` request bodies of ``size`` consecutive rows each, cycling through ``rows``."""
    out = []
    for k in range(count):
        start = (k * size) % max(len(rows) - size, 1)
        out.append(json.dumps({"rows": rows[start : start + size]}).encode())
    return out


# ------------------------------------------------------------------------------- in process
def _best_rate(fn: Any, rows: int, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return rows / best


def in_process(
    model: MultiTaskModel, table: pd.DataFrame, *, batch: int, threads: int, repeats: int
) -> dict[str, float]:
    """Rows/s of the network alone (encoded input) and of `predict` end to end."""
    torch.set_num_threads(threads)
    encoded = model.encode(table, labels=False)
    network = model.network_.eval()
    graph = graph_for(model, None, threads=threads)
    n = len(encoded)

    def torch_net() -> None:
        with torch.inference_mode():
            for start in range(0, n, batch):
                network(encoded.slice(start, start + batch), auxiliary=True)

    def onnx_net() -> None:
        for start in range(0, n, batch):
            graph.run(encoded.select(slice(start, start + batch)))

    return {
        "torch_network_rows_per_s": _best_rate(torch_net, n, repeats),
        "onnx_network_rows_per_s": _best_rate(onnx_net, n, repeats),
        "torch_predict_rows_per_s": _best_rate(lambda: model.predict(table), n, repeats),
        "onnx_predict_rows_per_s": _best_rate(
            lambda: model.predict(table, backend="onnx"), n, repeats
        ),
    }


# ------------------------------------------------------------------------------------ models
def _census(run: Path) -> tuple[Path, pd.DataFrame]:
    """The census MMoE of ``run`` (trained for one epoch when absent) and its test split."""
    from polytask.run import load_run_split

    if not (run / "model").is_dir():
        print(f"training the census MMoE for one epoch -> {run}", flush=True)
        cmd = [sys.executable, "-m", "polytask", "train", str(EXAMPLE), "training.epochs=1"]
        subprocess.run([*cmd, "--out", str(run)], check=True)
    return run / "model", load_run_split(run, "test")


def _tiny(folder: Path) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 1200
    df = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
        }
    )
    df["click"] = (df.x + rng.normal(size=n) > 0).astype(int)
    df["dwell"] = df.x * 2 + df.z
    model = MultiTaskModel(
        features={"categorical": ["color"], "numeric": ["x", "z"]},
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        training={"epochs": 1, "progress": False},
    ).fit(df)
    return model.save(folder / "model"), df


# -------------------------------------------------------------------------------------- main
def _print_row(label: str, values: dict[str, Any]) -> None:
    shown = ", ".join(
        f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
    )
    print(f"{label}: {shown}", flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/census_1epoch", help="census run folder")
    parser.add_argument("--smoke", action="store_true", help="tiny model and counts")
    parser.add_argument("--dir", help="with --smoke: folder for the tiny model")
    parser.add_argument("--requests", type=int, default=1000, help="1-row latency requests")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15, help="saturation run length")
    parser.add_argument("--load-seconds", type=float, default=60, help="load run length")
    parser.add_argument("--batch", type=int, default=1024, help="in-process batch size")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.seconds, args.load_seconds, args.repeats = 20, 2.0, 3.0, 1
        args.concurrency = 2
        tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench_serve_"))
        model_dir, table = _tiny(tmp)
    else:
        model_dir, table = _census(Path(args.run))
    model = MultiTaskModel.load(model_dir)
    if not (model_dir / "model.onnx").is_file():
        export_onnx(model, model_dir / "model.onnx")
    features = model.config.features.columns
    rows = json.loads(table[features].to_json(orient="records"))

    load1 = os.getloadavg()[0]
    results: dict[str, Any] = {
        "model": model.config.model.name,
        "rows": len(table),
        "polytask": polytask.__version__,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "loadavg_1min_at_start": load1,
        "threads": args.threads,
        "concurrency": args.concurrency,
    }
    print(
        f"serving benchmark: {results['model']} ({model_dir}), {os.cpu_count()} CPUs, "
        f"1-min load average {load1:.2f} at start, {args.threads} intra-op thread(s)",
        flush=True,
    )
    one = _bodies(rows, 1, args.requests)
    hundred = _bodies(rows, 100, max(args.requests // 10, 5))
    for backend in args.backends:
        with Server(model_dir, backend, threads=args.threads, start_timeout=180) as server:
            r: dict[str, Any] = {
                "latency_1_row": _latency(server.url, one),
                "latency_100_rows": _latency(server.url, hundred),
                "saturation_100_rows": _load(
                    server.url,
                    hundred,
                    100,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                    max_requests=100_000,
                ),
            }
            _print_row(f"{backend} 1-row latency ms", r["latency_1_row"])
            _print_row(f"{backend} 100-row latency ms", r["latency_100_rows"])
            _print_row(f"{backend} saturation", r["saturation_100_rows"])
            if backend == args.backends[0]:
                rss_start = server.rss_mb()
                mixed = [b for pair in zip(one, hundred, strict=False) for b in pair]
                load = _load(
                    server.url,
                    mixed,
                    50,  # half the requests 1 row, half 100: about 50 rows each
                    concurrency=args.concurrency,
                    seconds=args.load_seconds,
                    max_requests=1_000_000,
                )
                load.pop("rows_per_s")
                load["rss_mb_start"] = rss_start
                load["rss_mb_end"] = server.rss_mb()
                r["load"] = load
                _print_row(f"{backend} {args.load_seconds:.0f} s load", load)
            results[backend] = r
    results["in_process"] = in_process(
        model, table, batch=args.batch, threads=args.threads, repeats=args.repeats
    )
    ip = results["in_process"]
    ip["onnx_over_torch_network"] = ip["onnx_network_rows_per_s"] / ip["torch_network_rows_per_s"]
    ip["onnx_over_torch_predict"] = ip["onnx_predict_rows_per_s"] / ip["torch_predict_rows_per_s"]
    _print_row(f"in-process rows/s (batch {args.batch})", ip)
    results["loadavg_1min_at_end"] = os.getloadavg()[0]
    print(f"1-min load average at end {results['loadavg_1min_at_end']:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
