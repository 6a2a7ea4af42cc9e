"""Distributed training: 2 CPU processes (gloo, loopback only) match one process.

Each launch is ``python -m torch.distributed.run --nproc_per_node=2`` in a subprocess; this
file is also the worker script of the API launch (``__main__`` at the bottom). The reference
runs happen in the test process with the same global batch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from polytask import ConfigError, DataError, MultiTaskModel
from polytask.cli import main
from polytask.training.checkpoint import read_checkpoint
from polytask.training.distributed import shard_bounds

SRC = Path(__file__).resolve().parents[2] / "src"
ATOL = 1e-5

MMOE = {"name": "mmoe", "num_experts": 3, "expert_units": [16], "tower_units": [8]}
PLE = {"name": "ple", "num_task_experts": 1, "num_shared_experts": 1, "expert_units": [8]}
BOTTOM = {"name": "shared_bottom", "shared_units": [16], "tower_units": [8]}
# Adam's per-element m / sqrt(v) magnifies rounding differences in near-zero gradient entries
# (docs/distributed.md); SGD with momentum compares the updates themselves.
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
FEATURES = {"categorical": ["color", "size"], "numeric": ["x", "z"]}
TASKS = {"click": {"type": "binary"}, "dwell": {"type": "regression"}}

# name -> settings. Odd global batches give the ranks shares of different sizes, and labels
# missing on some rows give them different labelled counts: the loss normalisation must
# weight each rank by its labelled rows to match one process.
SCENARIOS: dict[str, dict[str, Any]] = {
    "mmoe_sum": {"model": MMOE, "loss": "sum", "batch_size": 64},
    "bottom_uncertainty": {"model": BOTTOM, "loss": "uncertainty", "batch_size": 63},
    "ple_dwa": {"model": PLE, "loss": "dwa", "batch_size": 64},
    "alternate": {"model": MMOE, "loss": "uncertainty", "batch_size": 50, "alternate": True},
    "pcgrad": {"model": MMOE, "loss": "pcgrad", "batch_size": 64},
    "gradnorm": {"model": BOTTOM, "loss": "gradnorm", "batch_size": 63},
}
# Batch norm on CPU normalises each rank's share with its own statistics, so these only have
# to agree across ranks (running statistics included), not with one process.
BATCH_NORM = {**BOTTOM, "norm": "batch"}
REPLICA_SCENARIOS: dict[str, dict[str, Any]] = {
    "batch_norm_sum": {"model": BATCH_NORM, "loss": "sum", "batch_size": 63},
    "batch_norm_pcgrad": {"model": BATCH_NORM, "loss": "pcgrad", "batch_size": 63},
}


def toy_table(n: int = 400) -> pd.DataFrame:
    """Two features of each kind; click is missing on a third of the rows, dwell on a fifth."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.integers(0, 6, n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n) * 3 + 1,
        }
    )
    logit = 1.5 * df.x + (df.color == "red") - 0.5 + 0.3 * rng.normal(size=n)
    df["click"] = np.where(rng.random(n) < 1 / 3, np.nan, (logit > 0).astype(float))
    df["dwell"] = np.where(rng.random(n) < 0.2, np.nan, 2.0 * df.x + rng.normal(size=n))
    return df


def fit_scenario(name: str, table: pd.DataFrame) -> MultiTaskModel:
    s = {**SCENARIOS, **REPLICA_SCENARIOS}[name]
    train, valid = table.iloc[:320], table.iloc[320:]
    training = {
        "epochs": 2,
        "batch_size": s["batch_size"],
        "monitor": "click.auc",
        "progress": False,
    }
    if s.get("alternate"):
        training["schedule"] = "alternate"
        train = {
            "click": train.iloc[:200].drop(columns=["dwell"]),
            "dwell": train.iloc[200:].drop(columns=["click"]),
        }
    model = MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model=s["model"],
        loss=s["loss"],
        optimizer=SGD,
        training=training,
    )
    return model.fit(train, validation=valid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Two local processes on the loopback interface."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _assert_close(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> float:
    assert ours.keys() == theirs.keys()
    worst = 0.0
    for key, value in ours.items():
        diff = float((value.float() - theirs[key].float()).abs().max()) if value.numel() else 0.0
        assert diff <= ATOL, (key, diff)
        worst = max(worst, diff)
    return worst


def test_shards_cover_every_row_once() -> None:
    for n in range(0, 12):
        blocks = [shard_bounds(n, r, 3) for r in range(3)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(blocks[r][1] == blocks[r + 1][0] for r in range(2))
        assert max(hi - lo for lo, hi in blocks) - min(hi - lo for lo, hi in blocks) <= 1


def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    """Joint (sum, uncertainty, DWA), alternate, and gradient weightings (PCGrad, GradNorm)."""
    table = toy_table()
    table.to_csv(tmp_path / "table.csv", index=False)
    torchrun(__file__, str(tmp_path), cwd=tmp_path)

    for rank in (0, 1):
        message = (tmp_path / f"refused.rank{rank}.txt").read_text()
        assert "training.batch_size is the global batch, shared by the 2 processes" in message
        message = (tmp_path / f"differ.rank{rank}.txt").read_text()
        assert "the data encoded on rank(s) [1] differ from rank 0's" in message
        # Resumed from the step-4 checkpoint, each rank ends bit-identical to the
        # uninterrupted run.
        finals = torch.load(tmp_path / f"checkpointed.rank{rank}.pt", weights_only=True)
        for key, value in finals["full-2"].items():
            assert torch.equal(finals["part-2"][key], value), (rank, key)
        assert any(not torch.equal(finals["part-1"][k], v) for k, v in finals["full-2"].items())
    bf16 = [torch.load(tmp_path / f"bf16.rank{r}.pt", weights_only=True) for r in (0, 1)]
    for rank in (0, 1):
        assert "torch.bfloat16" in bf16[rank]["dtypes"], bf16[rank]["dtypes"]
    for key, value in bf16[0]["network"].items():
        assert torch.equal(value, bf16[1]["network"][key]) and value.dtype == torch.float32, key
    # Rank 0 alone wrote them, with every rank's RNG state.
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == [
        "step-000000008",
        "step-000000012",
    ]
    checkpoint = read_checkpoint(tmp_path / "part" / "step-000000008")
    assert checkpoint.meta["world_size"] == 2
    assert {"rng.torch.rank0", "rng.torch.rank1"} <= checkpoint.state.keys()
    assert not torch.equal(checkpoint.state["rng.torch.rank0"], checkpoint.state["rng.torch.rank1"])
    # One process cannot resume what two wrote.
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\) and this run has 1"):
        _checkpointed_model().fit(
            table.iloc[:320], epochs=2, checkpoint_dir=tmp_path / "part", resume=True
        )
    for name in [*REPLICA_SCENARIOS, *SCENARIOS]:
        ranks = [torch.load(tmp_path / f"{name}.rank{r}.pt", weights_only=True) for r in (0, 1)]
        # The replicas never drift apart, batch-norm running statistics included.
        assert ranks[0]["network"].keys() == ranks[1]["network"].keys()
        for key, value in ranks[0]["network"].items():
            assert torch.equal(value, ranks[1]["network"][key]), (name, key)
        if name in REPLICA_SCENARIOS:
            assert any("running_mean" in key for key in ranks[0]["network"])
            continue
        single = fit_scenario(name, table)
        worst = _assert_close(ranks[0]["network"], single.network_.state_dict())
        print(f"{name}: largest weight difference from one process {worst:.1e}")
        _assert_close(ranks[0]["weighting"], single.weighting_.state_dict())
        # Per-epoch losses and exact validation metrics agree with one process's.
        history = json.loads(ranks[0]["history"])
        assert len(history) == len(single.history_)
        for ours, theirs in zip(history, single.history_, strict=True):
            for task in TASKS:
                assert ours["train_loss"][task] == pytest.approx(theirs["train_loss"][task], 1e-4)
                for metric, value in theirs["validation"][task].items():
                    assert ours["validation"][task][metric] == pytest.approx(value, 1e-4), metric


def test_torchrun_polytask_train_writes_once_with_metrics_over_all_rows(tmp_path: Path) -> None:
    toy_table().to_csv(tmp_path / "table.csv", index=False)
    spec = {
        "data": {"path": "table.csv", "split": {"train": 0.7, "validation": 0.15, "test": 0.15}},
        "features": FEATURES,
        "tasks": TASKS,
        "model": MMOE,
        "optimizer": SGD,
        "training": {"epochs": 2, "batch_size": 45, "monitor": "mean.auc", "progress": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    done = torchrun("-m", "polytask", "train", "run.yaml", "--out", "ddp", cwd=tmp_path)
    assert done.stdout.count("training mmoe") == 1  # only rank 0 prints
    assert done.stdout.count("wrote") == 1
    assert "trained by 2 processes (torchrun)" in done.stdout
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "config.yaml",
        "history.csv",  # training.loggers: [csv], rank 0 only
        "metrics.json",
        "model",
    ]

    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "one")]) == 0
    ours = load_file(tmp_path / "ddp" / "model" / "weights.safetensors")
    worst = _assert_close(ours, load_file(tmp_path / "one" / "model" / "weights.safetensors"))
    print(f"largest weight difference from one process: {worst:.2e}")

    # metrics.json holds metrics over every row of each split, not a mean over ranks.
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    model = MultiTaskModel.load(tmp_path / "ddp" / "model")
    from polytask.run import load_splits

    splits = load_splits(model_config_data(tmp_path / "run.yaml"), tmp_path)
    assert metrics["rows"] == {"train": 280, "validation": 60, "test": 60}
    assert metrics["processes"] == 2
    for split, frame in (("validation", splits.validation), ("test", splits.test)):
        expected = model.evaluate(frame)
        for task in TASKS:
            assert metrics[split][task] == pytest.approx(expected[task], rel=1e-9), split
    # The validation metrics of the chosen epoch, gathered from both ranks during training,
    # equal those of the saved model computed by one process over all rows.
    history = json.loads((tmp_path / "ddp" / "model" / "history.json").read_text())
    best = history[metrics["best_epoch"] - 1]["validation"]
    for task in TASKS:
        # evaluate also reports what training does not track (a binary task's ECE)
        final = {k: metrics["validation"][task][k] for k in best[task]}
        assert best[task] == pytest.approx(final, rel=1e-6)


def test_torchrun_trains_list_features_like_one_process(tmp_path: Path) -> None:
    """List-valued features, an attention sequence and hashed ids under torchrun (issue 10)."""
    rng = np.random.default_rng(0)
    n = 300
    item = rng.integers(0, 15, n)
    df = pd.DataFrame(
        {
            "item": item,
            "user": [f"u{k}" for k in rng.integers(0, 100, n)],
            "tags": ["|".join(rng.choice(list("abcd"), rng.integers(0, 3))) for _ in range(n)],
            "history": [
                "|".join(map(str, rng.integers(0, 15, rng.integers(0, 5)))) for _ in range(n)
            ],
            "x": rng.normal(size=n),
        }
    )
    df["click"] = (rng.random(n) < 0.4).astype(int)
    df.to_csv(tmp_path / "table.csv", index=False)
    spec = {
        "data": {"path": "table.csv", "split": {"train": 0.7, "validation": 0.15, "test": 0.15}},
        "features": {
            "categorical": [
                "item",
                {"name": "user", "hash_buckets": 32},
                {"name": "tags", "sep": "|", "pooling": "mean"},
                {
                    "name": "history",
                    "sep": "|",
                    "pooling": "attention",
                    "query": "item",
                    "shared_with": "item",
                    "max_len": 4,
                },
            ],
            "numeric": ["x"],
        },
        "tasks": {"click": {"type": "binary"}},
        "model": {"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        "optimizer": SGD,
        "training": {"epochs": 2, "batch_size": 45, "progress": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    done = torchrun("-m", "polytask", "train", "run.yaml", "--out", "ddp", cwd=tmp_path)
    assert "trained by 2 processes (torchrun)" in done.stdout
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "one")]) == 0
    ours = load_file(tmp_path / "ddp" / "model" / "weights.safetensors")
    _assert_close(ours, load_file(tmp_path / "one" / "model" / "weights.safetensors"))


def _checkpointed_model() -> MultiTaskModel:
    """Dropout on shards of 32 and 31 rows: the ranks' RNG states differ, so resuming is only
    exact if each rank gets its own back."""
    return MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model={**MMOE, "dropout": 0.3},
        loss="uncertainty",
        optimizer=SGD,
        training={"batch_size": 63, "checkpoint_every": 4, "progress": False},
    )


@pytest.mark.slow
def test_training_compile_under_torchrun_matches_eager(tmp_path: Path) -> None:
    """torch.compile (inductor, CPU) inside DDP: graphs are compiled on every rank, the
    replicas agree, and the weights match the eager DDP run's."""
    toy_table().to_csv(tmp_path / "table.csv", index=False)
    torchrun(__file__, str(tmp_path), "compile", cwd=tmp_path)
    runs = [torch.load(tmp_path / f"compile.rank{r}.pt", weights_only=True) for r in (0, 1)]
    for rank in (0, 1):
        assert runs[rank]["False"]["graphs"] == 0 and runs[rank]["True"]["graphs"] > 0
    for key, value in runs[0]["True"]["network"].items():
        assert torch.equal(value, runs[1]["True"]["network"][key]), key
    worst = _assert_close(runs[0]["True"]["network"], runs[0]["False"]["network"])
    print(f"compiled vs eager under DDP: largest weight difference {worst:.1e}")


def model_config_data(run_file: Path) -> Any:
    from polytask.config import load_run_file

    return load_run_file(run_file, [])[0].data


def _worker(out: Path) -> None:
    """Run under torchrun: every scenario, then refused settings; each rank saves its own
    replica so the test can check that they agree."""
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    table = pd.read_csv(out / "table.csv")
    for name in [*SCENARIOS, *REPLICA_SCENARIOS]:
        model = fit_scenario(name, table)
        state = {
            "network": model.network_.state_dict(),
            "weighting": model.weighting_.state_dict(),
            "history": json.dumps(model.history_),
        }
        torch.save(state, out / f"{name}.rank{rank}.pt")
    try:
        MultiTaskModel(features=FEATURES, tasks=TASKS, model=MMOE, training={"batch_size": 1}).fit(
            table
        )
    except ConfigError as err:
        (out / f"refused.rank{rank}.txt").write_text(str(err))
    # Rank 1 reads a table with one value changed: every rank refuses, naming rank 1.
    changed = table.copy()
    changed.loc[7, "x"] += rank
    try:
        MultiTaskModel(features=FEATURES, tasks=TASKS, model=MMOE, training={"epochs": 1}).fit(
            changed
        )
    except DataError as err:
        (out / f"differ.rank{rank}.txt").write_text(str(err))
    # Checkpoints: an uninterrupted run, and the same run stopped after epoch 1 and resumed
    # from its mid-epoch checkpoint (step 4 of 6), in fresh folders that only rank 0 writes.
    finals = {}
    for name, epochs, resume in (("full", 2, False), ("part", 1, False), ("part", 2, True)):
        model = _checkpointed_model()
        model.fit(table.iloc[:320], epochs=epochs, checkpoint_dir=out / name, resume=resume)
        finals[f"{name}-{epochs}"] = model.network_.state_dict()
    torch.save(finals, out / f"checkpointed.rank{rank}.pt")
    # training.precision: bf16 applies under torchrun too: the linear layers of the training
    # forward pass return bfloat16.
    seen: set[torch.dtype] = set()
    linear_forward = torch.nn.Linear.forward

    def recording(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        y = linear_forward(self, x)
        seen.add(y.dtype)
        return y

    torch.nn.Linear.forward = recording  # type: ignore[method-assign]
    model = MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model=BOTTOM,
        optimizer=SGD,
        training={"epochs": 1, "batch_size": 64, "precision": "bf16", "progress": False},
    ).fit(table)
    torch.nn.Linear.forward = linear_forward  # type: ignore[method-assign]
    torch.save(
        {"dtypes": sorted(str(d) for d in seen), "network": model.network_.state_dict()},
        out / f"bf16.rank{rank}.pt",
    )
    dist.barrier()


def _compile_worker(out: Path) -> None:
    """Run under torchrun: the same DDP fit eager and with training.compile."""
    import torch._dynamo

    rank = int(os.environ["RANK"])
    table = pd.read_csv(out / "table.csv")
    results = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = MultiTaskModel(
            features=FEATURES,
            tasks=TASKS,
            model=MMOE,
            optimizer=SGD,
            training={"epochs": 2, "batch_size": 64, "compile": compiled, "progress": False},
        ).fit(table.iloc[:320])  # no validation: only the training steps run the network
        graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        results[str(compiled)] = {"network": model.network_.state_dict(), "graphs": graphs}
    torch.save(results, out / f"compile.rank{rank}.pt")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "compile":
        _compile_worker(Path(sys.argv[1]))
    else:
        _worker(Path(sys.argv[1]))
