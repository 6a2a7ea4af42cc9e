"""Training and inference throughput of MMoE on census-income: polytask, a hand-written
PyTorch loop and DeepCTR-Torch, measured in one process with the runs alternated.

    PYTHONPATH=src python benchmarks/throughput.py --config both --repeats 5

Two configurations (``--config``):

- ``reference``: the issue's reference measurement, ``examples/bench_census_mmoe.yaml``
  (8 experts of [128, 64], towers [64], batch 1024, Adam 1e-3, 2 epochs, float32).
- ``overhead``: the same with experts [16], towers [8] and batch 256, where the cost of a
  step is mostly the framework's per-op and per-step overhead, not arithmetic.

What is timed, for every system alike: the data are loaded and encoded once (polytask's
fitted ``Preprocessor``, so all three see the same integer codes and scaled numbers), then

- training: samples/s of each epoch (the per-epoch shuffle and every step; no evaluation),
  the median over epochs for one run (what ``polytask train`` writes as
  ``train_samples_per_s``), then the median over ``--repeats`` runs; ``best of runs`` is the
  fastest run, the better estimate when other jobs share the machine (they only slow a run).
  polytask's figure is the one its own history records for ``MultiTaskModel.fit`` (the
  epoch loop; fit's encoding of the DataFrame before it is not counted). DeepCTR-Torch's is
  taken by a callback at the start and end of each epoch of ``MMOE.fit``.
- inference: rows/s of raw outputs for the whole test split from already encoded data, in
  batches of 8192 (polytask's ``eval_batch_size``): ``predict_outputs`` for polytask,
  ``MMOE.predict`` for DeepCTR-Torch. The median of 3 passes a run, then over runs.
- peak RSS: each system once more in a fresh subprocess that reads the already encoded data
  from a cache, trains and predicts; the child's ``VmHWM`` (see `peak_rss_mib` for why not
  ``ru_maxrss``). ``baseline`` is a child that imports the same modules and reads the same
  data, and does nothing else.
- test AUC per task, from each system's outputs of its last run, so the models can be seen to
  be comparable.

DeepCTR-Torch 0.3.0 is a dev dependency (``pip install -e .[dev]``; alone: ``pip install
deepctr-torch==0.3.0``); when it cannot be imported its rows are left out with a note. Its
MMOE runs with plain softmax gates (``gate_dnn_hidden_units=()``, as in the paper and the
other two), no L2 penalty, and the numeric columns concatenated as they are (polytask and the
hand loop project them by a 7 x 7 linear layer).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
RUN_FILE = ROOT / "examples" / "bench_census_mmoe.yaml"
CENSUS = Path("census-income-kdd") / "census-income.test.gz"
EVAL_BATCH = 8192
SMOKE_ROWS = 3000

SYSTEMS = ("polytask", "hand-written", "deepctr-torch")
COLUMNS = (
    "config",
    "system",
    "train samples/s",
    "best of runs",
    "train x hand",
    "infer samples/s",
    "infer x hand",
    "peak RSS MiB",
    "RSS x hand",
    "RSS - baseline MiB",
    "AUC income",
    "AUC marital",
)


@dataclass(frozen=True)
class Setting:
    expert_units: tuple[int, ...]
    tower_units: tuple[int, ...]
    batch_size: int


CONFIGS: dict[str, Setting] = {
    "reference": Setting(expert_units=(128, 64), tower_units=(64,), batch_size=1024),
    "overhead": Setting(expert_units=(16,), tower_units=(8,), batch_size=256),
}


# ---------------------------------------------------------------------------------- data
def shared_data_dir() -> Path:
    """``$POLYTASK_SHARED_DATA``, else the first ``shared/data`` beside an ancestor."""
    override = os.environ.get("POLYTASK_SHARED_DATA")
    candidates = [Path(override)] if override else [p / "shared" / "data" for p in ROOT.parents]
    for candidate in candidates:
        if (candidate / CENSUS).exists():
            return candidate
    raise SystemExit(
        f"census-income file not found: expected {candidates[0] / CENSUS}; pass --data PATH or "
        "set POLYTASK_SHARED_DATA"
    )


def run_file(setting: Setting, epochs: int, threads: int) -> dict[str, Any]:
    """The estimator settings of ``examples/bench_census_mmoe.yaml`` for ``setting``."""
    raw = yaml.safe_load(RUN_FILE.read_text(encoding="utf-8"))
    raw.pop("data")
    raw["model"].update(
        expert_units=list(setting.expert_units), tower_units=list(setting.tower_units)
    )
    raw["training"].update(
        epochs=epochs, batch_size=setting.batch_size, num_threads=threads, progress=False
    )
    return dict(raw)


@dataclass
class Data:
    settings: dict[str, Any]
    train_df: pd.DataFrame
    test_df: pd.DataFrame
    cardinalities: list[int]
    train: Any  # polytask EncodedData
    test: Any
    task_names: list[str] = field(default_factory=list)


def load_data(path: Path, settings: dict[str, Any], rows: int | None) -> Data:
    from polytask.config import EstimatorConfig
    from polytask.data import Preprocessor
    from polytask.datasets import load_census_income, split_frame

    frame = load_census_income(path)
    if rows is not None:
        frame = frame.iloc[:rows]
    train_df, test_df = split_frame(frame, fractions=(0.8, 0.2), seed=0)
    cfg = EstimatorConfig.model_validate(settings)
    pre = Preprocessor(features=cfg.features, tasks=cfg.tasks).fit(train_df)
    return Data(
        settings=settings,
        train_df=train_df,
        test_df=test_df,
        cardinalities=pre.cardinalities,
        train=pre.transform(train_df, labels=True),
        test=pre.transform(test_df, labels=True),
        task_names=list(cfg.tasks),
    )


# ------------------------------------------------------------------------------- systems
@dataclass
class Run:
    train_per_s: float  # median over epochs
    infer_per_s: float  # median over passes
    outputs: np.ndarray  # [N_test, K] raw outputs or probabilities (AUC only needs the order)


def _median_rate(rows: int, seconds: Sequence[float]) -> float:
    return statistics.median(rows / s for s in seconds)


def _timed_passes(fn: Callable[[], Any], passes: int) -> tuple[Any, list[float]]:
    times, out = [], None
    for _ in range(passes):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def run_polytask(data: Data, epochs: int, passes: int) -> Run:
    from polytask import MultiTaskModel
    from polytask.training import predict_outputs

    model = MultiTaskModel(**data.settings).fit(data.train_df, epochs=epochs)
    train_rate = statistics.median(r["train_samples_per_s"] for r in model.history_)
    out, times = _timed_passes(
        lambda: predict_outputs(model.network_, data.test, EVAL_BATCH), passes
    )
    outputs = np.stack([out[name] for name in data.task_names], axis=1)
    return Run(train_rate, _median_rate(len(data.test), times), outputs)


class HandMMoE(nn.Module):
    """The simplest fast MMoE a competent engineer writes: one embedding table with
    per-column offsets, the numeric columns through a linear layer, the experts' first layer
    as one GEMM and later ones as ``baddbmm``, softmax gates, one tower per task."""

    offsets: Tensor

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric: int,
        setting: Setting,
        *,
        experts: int = 8,
        dim: int = 8,
        tasks: int = 2,
    ) -> None:
        super().__init__()
        self.experts, self.tasks = experts, tasks
        sizes = torch.tensor(list(cardinalities))
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes)
        self.embedding = nn.Embedding(int(sizes.sum()), dim)
        self.numeric = nn.Linear(numeric, numeric)
        width = len(cardinalities) * dim + numeric
        units = setting.expert_units
        self.w0 = nn.Linear(width, experts * units[0])
        self.ws = nn.ParameterList(
            nn.Parameter(torch.randn(experts, a, b) / a**0.5) for a, b in itertools.pairwise(units)
        )
        self.bs = nn.ParameterList(nn.Parameter(torch.zeros(experts, 1, b)) for b in units[1:])
        self.gates = nn.Linear(width, tasks * experts)
        self.towers = nn.ModuleList()
        for _ in range(tasks):
            layers: list[nn.Module] = []
            prev = units[-1]
            for u in setting.tower_units:
                layers += [nn.Linear(prev, u), nn.ReLU()]
                prev = u
            self.towers.append(nn.Sequential(*layers, nn.Linear(prev, 1)))

    def forward(self, categorical: Tensor, numeric: Tensor) -> Tensor:
        x = torch.cat(
            [self.embedding(categorical + self.offsets).flatten(1), self.numeric(numeric)], 1
        )
        b = x.shape[0]
        h = torch.relu(self.w0(x)).view(b, self.experts, -1).transpose(0, 1)
        for w, bias in zip(self.ws, self.bs, strict=True):
            h = torch.relu(torch.baddbmm(bias, h, w))
        g = torch.softmax(self.gates(x).view(b, self.tasks, self.experts), dim=-1)
        mixed = torch.einsum("bge,ebd->gbd", g, h)
        return torch.cat([tower(mixed[k]) for k, tower in enumerate(self.towers)], dim=1)


def run_hand(data: Data, setting: Setting, epochs: int, passes: int) -> Run:
    cat, num = data.train.categorical, data.train.numeric
    y = torch.stack([data.train.labels[t] for t in data.task_names], 1)
    torch.manual_seed(0)
    model = HandMMoE(data.cardinalities, num.shape[1], setting, tasks=len(data.task_names))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, bs = len(y), setting.batch_size
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(n)
        c, x, t = cat[perm], num[perm], y[perm]
        for i in range(0, n, bs):
            loss = F.binary_cross_entropy_with_logits(
                model(c[i : i + bs], x[i : i + bs]), t[i : i + bs]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)

    @torch.inference_mode()
    def predict() -> Tensor:
        model.eval()
        c, x = data.test.categorical, data.test.numeric
        return torch.cat(
            [
                model(c[i : i + EVAL_BATCH], x[i : i + EVAL_BATCH])
                for i in range(0, len(c), EVAL_BATCH)
            ]
        )

    out, times = _timed_passes(predict, passes)
    return Run(_median_rate(n, seconds), _median_rate(len(data.test), times), out.numpy())


def deepctr_available() -> str | None:
    """None when DeepCTR-Torch imports, else why not."""
    try:
        import deepctr_torch  # noqa: F401
    except Exception as err:  # any failure to import means: skip it, say why
        return f"{type(err).__name__}: {err}"
    return None


def run_deepctr(data: Data, setting: Setting, epochs: int, passes: int) -> Run:
    from deepctr_torch.callbacks import Callback
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import MMOE

    features = data.settings["features"]
    cat_names, num_names = features["categorical"], features["numeric"]

    def inputs(encoded: Any) -> dict[str, np.ndarray]:
        cols = {n: encoded.categorical[:, j].numpy() for j, n in enumerate(cat_names)}
        cols.update({n: encoded.numeric[:, j].numpy() for j, n in enumerate(num_names)})
        return cols

    columns = [
        SparseFeat(n, vocabulary_size=card, embedding_dim=8)
        for n, card in zip(cat_names, data.cardinalities, strict=True)
    ] + [DenseFeat(n, 1) for n in num_names]
    torch.manual_seed(0)
    model = MMOE(
        columns,
        num_experts=8,
        expert_dnn_hidden_units=setting.expert_units,
        gate_dnn_hidden_units=(),
        tower_dnn_hidden_units=setting.tower_units,
        l2_reg_embedding=0.0,
        l2_reg_linear=0.0,
        task_types=["binary"] * len(data.task_names),
        task_names=data.task_names,
        device="cpu",
    )
    model.compile("adam", loss=["binary_crossentropy"] * len(data.task_names))

    class EpochTimer(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    x_train, x_test = inputs(data.train), inputs(data.test)
    y = torch.stack([data.train.labels[t] for t in data.task_names], 1).numpy()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device and a summary
        model.fit(
            x_train, y, batch_size=setting.batch_size, epochs=epochs, verbose=0, callbacks=[timer]
        )
    out, times = _timed_passes(lambda: model.predict(x_test, batch_size=EVAL_BATCH), passes)
    return Run(_median_rate(len(y), timer.seconds), _median_rate(len(data.test), times), out)


def run_system(system: str, data: Data, setting: Setting, epochs: int, passes: int) -> Run:
    if system == "polytask":
        return run_polytask(data, epochs, passes)
    if system == "hand-written":
        return run_hand(data, setting, epochs, passes)
    return run_deepctr(data, setting, epochs, passes)


def aucs(data: Data, outputs: np.ndarray) -> list[float]:
    result = []
    for k, name in enumerate(data.task_names):
        label = data.test.labels[name].numpy()
        keep = ~np.isnan(label)
        result.append(float(roc_auc_score(label[keep], outputs[keep, k])))
    return result


# ------------------------------------------------------------------------------ peak RSS
def peak_rss_mib(argv: list[str]) -> float:
    """Peak resident set size of a child running ``argv``, in MiB.

    Not ``ru_maxrss`` from ``os.wait4``: on Linux, exec records the high-water mark of the
    memory the child had before it (the parent's, shared after fork), so every child would
    report at least the parent's RSS. The child reads ``VmHWM`` of its own new address space
    from ``/proc/self/status`` instead and prints it as its last line."""
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1]) / 1024


def vm_hwm_kib() -> int:
    """This process's peak RSS (KiB) since its last exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def save_cache(data: Data, folder: Path) -> None:
    """The loaded and encoded data for the RSS children, so that parsing the census file
    (about 170 MiB at its peak) does not hide what training itself takes."""
    data.train_df.to_parquet(folder / "train.parquet")
    data.test_df.to_parquet(folder / "test.parquet")
    tensors = {}
    for split in ("train", "test"):
        enc = getattr(data, split)
        tensors[f"{split}.categorical"] = enc.categorical
        tensors[f"{split}.numeric"] = enc.numeric
        for name, label in enc.labels.items():
            tensors[f"{split}.label.{name}"] = label
    torch.save(tensors, folder / "encoded.pt")
    meta = {"cardinalities": data.cardinalities, "task_names": data.task_names}
    (folder / "meta.json").write_text(json.dumps(meta))


def load_cache(folder: Path, settings: dict[str, Any]) -> Data:
    from polytask.data import EncodedData

    tensors = torch.load(folder / "encoded.pt", weights_only=True)
    meta = json.loads((folder / "meta.json").read_text())

    def encoded(split: str) -> EncodedData:
        return EncodedData(
            categorical=tensors[f"{split}.categorical"],
            numeric=tensors[f"{split}.numeric"],
            labels={t: tensors[f"{split}.label.{t}"] for t in meta["task_names"]},
        )

    return Data(
        settings=settings,
        train_df=pd.read_parquet(folder / "train.parquet"),
        test_df=pd.read_parquet(folder / "test.parquet"),
        cardinalities=meta["cardinalities"],
        train=encoded("train"),
        test=encoded("test"),
        task_names=meta["task_names"],
    )


def child_main(args: argparse.Namespace) -> int:
    """One system, once, in a fresh process: what the parent's ``peak_rss_mib`` measures."""
    import polytask.estimator  # noqa: F401  every child imports what the parent's systems do

    setting = CONFIGS[args.config]
    data = load_cache(args.cache, run_file(setting, args.epochs, args.threads))
    if args.child != "baseline":
        with contextlib.redirect_stdout(io.StringIO()):
            run_system(args.child, data, setting, args.epochs, passes=1)
    print(vm_hwm_kib())
    return 0


# ---------------------------------------------------------------------------------- main
def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(s: dict[str, Any], hand: dict[str, Any] | None, key: str) -> float | None:
    if hand is None or s[key] is None or hand[key] is None:
        return None
    return float(s[key] / hand[key])


def markdown(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(list(COLUMNS)), sep, *(line(r) for r in rows)])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=[*CONFIGS, "both"], default="both")
    p.add_argument("--repeats", type=int, default=5, help="runs of each system (median)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--data", type=Path, help="census-income.test.gz (default: shared/data)")
    p.add_argument("--rows", type=int, help="use only the first ROWS rows of the file")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_ROWS} rows, 1 repeat, 1 epoch, no peak RSS (unless --rss): seconds",
    )
    p.add_argument("--rss", action="store_true", help="measure peak RSS even with --smoke")
    p.add_argument("--child", choices=[*SYSTEMS, "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.rows = args.rows or SMOKE_ROWS
        args.repeats, args.epochs = 1, 1
        args.no_rss = args.no_rss or not args.rss
    if args.data is None:
        args.data = shared_data_dir() / CENSUS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        return child_main(args)
    systems = list(args.systems)
    why = deepctr_available() if "deepctr-torch" in systems else None
    if why is not None:
        print(
            f"note: deepctr_torch is not importable ({why}); its rows are left out. "
            "Install it for benchmarking only: pip install deepctr-torch --no-deps tqdm"
        )
        systems.remove("deepctr-torch")
    configs = list(CONFIGS) if args.config == "both" else [args.config]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats, "
        f"{args.epochs} epochs, data {args.data}"
        + (f" (first {args.rows} rows)" if args.rows else "")
    )
    rows: list[list[str]] = []
    results: dict[str, Any] = {}
    for config in configs:
        setting = CONFIGS[config]
        data = load_data(args.data, run_file(setting, args.epochs, args.threads), args.rows)
        runs: dict[str, list[Run]] = {s: [] for s in systems}
        for _ in range(args.repeats):
            for system in systems:  # alternated, so machine noise hits every system alike
                runs[system].append(run_system(system, data, setting, args.epochs, passes=3))
        rss: dict[str, float] = {}
        if not args.no_rss:
            with tempfile.TemporaryDirectory() as tmp:
                save_cache(data, Path(tmp))
                base = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--config",
                    config,
                    "--epochs",
                    str(args.epochs),
                    "--threads",
                    str(args.threads),
                    "--data",
                    str(args.data),
                    "--cache",
                    tmp,
                ]
                for system in [*systems, "baseline"]:
                    rss[system] = peak_rss_mib([*base, "--child", system])
        summary: dict[str, dict[str, Any]] = {
            s: {
                "train_samples_per_s": statistics.median(r.train_per_s for r in rs),
                "infer_samples_per_s": statistics.median(r.infer_per_s for r in rs),
                "peak_rss_mib": rss.get(s),
                "auc": aucs(data, rs[-1].outputs),
                "train_best": max(r.train_per_s for r in rs),
                "train_runs": [r.train_per_s for r in rs],
            }
            for s, rs in runs.items()
        }
        hand = summary.get("hand-written")

        for system, s in summary.items():
            rows.append(
                [
                    config,
                    system,
                    fmt(s["train_samples_per_s"]),
                    fmt(s["train_best"]),
                    fmt(ratio(s, hand, "train_samples_per_s"), 2),
                    fmt(s["infer_samples_per_s"]),
                    fmt(ratio(s, hand, "infer_samples_per_s"), 2),
                    fmt(s["peak_rss_mib"]),
                    fmt(ratio(s, hand, "peak_rss_mib"), 2),
                    fmt(s["peak_rss_mib"] - rss["baseline"] if rss else None),
                    *(fmt(a, 4) for a in s["auc"]),
                ]
            )
        if rss:
            rows.append(
                [
                    config,
                    "baseline (load + encode only)",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    fmt(rss["baseline"]),
                    "-",
                    "0",
                    "-",
                    "-",
                ]
            )
        results[config] = {
            "setting": vars(setting),
            "rows_train": len(data.train),
            "rows_test": len(data.test),
            "systems": summary,
            "rss": rss,
        }
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
