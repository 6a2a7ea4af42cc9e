"""MovieLens-100K with the features of a real ranking table (examples/movielens_mtl.yaml):
test metrics of single-task models against shared-bottom, MMoE and CGC, with and without the
behaviour sequence; and training throughput of the example against a hand-written PyTorch loop
of the same network, the runs alternated.

    PYTHONPATH=src python benchmarks/movielens.py quality --seeds 3 --epochs 4
    PYTHONPATH=src python benchmarks/movielens.py throughput --repeats 3 --epochs 2

``quality``: every model on the example's features and training settings (``training.epochs``
``--epochs``, early stopping on the validation split as the run file says), once with the
history (``history``: DIN target attention over the user's last 20 movies, ``shared_with:
movie_id``; ``history_ratings``: the ratings given to them, mean-pooled) and once without
either column, for each seed; test metrics of the chosen epoch per task, mean and standard
deviation over seeds. ``single-task`` is one model per task (the example's CGC with that task
alone, so one task's experts and gate, plus the shared experts). ``--ablation`` adds the two
halves: the movie ids alone and their ratings alone.

``throughput``: the data are encoded once by the fitted preprocessor; then, alternated
``--repeats`` times, polytask's ``MultiTaskModel.fit`` on the encoded training split (its
``train_samples_per_s``, the median over epochs, evaluation excluded) and `HandCGC`, the same
network written plainly in PyTorch (the same embeddings, masked means over genres and the
history's ratings, DIN attention over the history in the movie table, CGC experts and gates,
towers; Adam, the same batch size and losses), trained by a plain loop on the same tensors.
The ratio is the median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
RUN_FILE = ROOT / "examples" / "movielens_mtl.yaml"
MODELS = ("single-task", "shared_bottom", "mmoe", "cgc")


def shared_data_dir() -> Path:
    override = os.environ.get("POLYTASK_SHARED_DATA")
    candidates = [Path(override)] if override else [p / "shared" / "data" for p in ROOT.parents]
    for candidate in candidates:
        if (candidate / "movielens-100k" / "u.data").exists():
            return candidate
    raise SystemExit(f"movielens-100k not found under {candidates[0]}; set POLYTASK_SHARED_DATA")


def settings(epochs: int, threads: int, unnormalised: bool = False) -> dict[str, Any]:
    raw = yaml.safe_load(RUN_FILE.read_text(encoding="utf-8"))
    raw.pop("data")
    for column in raw["features"]["categorical"]:
        if unnormalised and isinstance(column, dict) and column.get("pooling") == "attention":
            column["attention_softmax"] = False
    raw["training"].update(epochs=epochs, progress=False, num_threads=threads)
    return dict(raw)


def model_settings(base: dict[str, Any], name: str) -> dict[str, Any]:
    cgc = base["model"]
    if name == "shared_bottom":
        return {"name": "shared_bottom", "shared_units": [128, 64], "tower_units": [32]}
    if name == "mmoe":
        experts = cgc["num_shared_experts"] + 3 * cgc["num_task_experts"]
        return {
            "name": "mmoe",
            "num_experts": experts,
            "expert_units": cgc["expert_units"],
            "tower_units": cgc["tower_units"],
        }
    return dict(cgc)


def _named(column: Any, name: str) -> bool:
    return column == name or (isinstance(column, dict) and column["name"] == name)


HISTORY = ("history", "history_ratings")
VARIANTS = {
    "with history": HISTORY,
    "without history": (),
    "history ids only": ("history",),
    "history ratings only": ("history_ratings",),
}
"""Which of the history columns each variant keeps (``--ablation`` runs the last two too)."""


def history_variant(features: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    kept = [
        c
        for c in features["categorical"]
        if not any(_named(c, h) for h in HISTORY if h not in keep)
    ]
    return {**features, "categorical": kept}


# ------------------------------------------------------------------------------- quality
def quality(args: argparse.Namespace) -> None:
    from polytask import MultiTaskModel
    from polytask.datasets import load_movielens_100k, split_by_column

    train, valid, test = (
        part.iloc[: args.rows]
        for part in split_by_column(load_movielens_100k(args.data / "movielens-100k"))
    )
    base = settings(args.epochs, args.threads, args.unnormalised)
    if args.no_user_id:
        base["features"]["categorical"] = [
            c for c in base["features"]["categorical"] if not _named(c, "user_id")
        ]
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for seed in range(args.seeds):
        for history in list(VARIANTS)[: 4 if args.ablation else 2]:
            features = history_variant(base["features"], VARIANTS[history])
            for name in args.models:
                start = time.perf_counter()
                scores: dict[str, float] = {}
                runs = (
                    [{task: spec} for task, spec in base["tasks"].items()]
                    if name == "single-task"
                    else [base["tasks"]]
                )
                for tasks in runs:
                    monitor = base["training"]["monitor"]
                    if monitor.split(".")[0] not in tasks:
                        task = next(iter(tasks))
                        monitor = (
                            f"{task}.{'rmse' if tasks[task]['type'] == 'regression' else 'auc'}"
                        )
                    model = MultiTaskModel(
                        features=features,
                        tasks=tasks,
                        model=model_settings(base, name),
                        loss=base["loss"],
                        optimizer=base["optimizer"],
                        training={**base["training"], "seed": seed, "monitor": monitor},
                    ).fit(train, validation=valid)
                    metrics = model.evaluate(test)
                    for task in tasks:
                        key = "rmse" if tasks[task]["type"] == "regression" else "auc"
                        scores[f"{task} {key}"] = metrics[task][key]
                cell = results.setdefault((history, name), {})
                for key, value in scores.items():
                    cell.setdefault(key, []).append(value)
                print(
                    f"seed {seed} {history:20s} {name:13s} "
                    + "  ".join(f"{k}={v:.4f}" for k, v in scores.items())
                    + f"  ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    keys = list(next(iter(results.values())))
    print(f"\ntest metrics, mean ± std over {args.seeds} seeds (epochs <= {args.epochs})")
    print("| features | model | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for (history, name), cell in results.items():
        row = [f"{statistics.mean(cell[k]):.4f} ± {statistics.pstdev(cell[k]):.4f}" for k in keys]
        print(f"| {history} | {name} | " + " | ".join(row) + " |")


# ---------------------------------------------------------------------------- throughput
class HandCGC(nn.Module):
    """The example's network written plainly: single-valued columns in one embedding table
    with offsets, genres and the history's ratings mean-pooled over padded [B, L] lookups in
    their own tables, the history looked up in
    the movie rows of the same table and pooled by a DIN MLP over [h, q, h-q, h*q] (masked;
    softmax-normalised when the run file says so), numeric columns projected; CGC: every
    expert's first layer in one GEMM, per-task softmax gates over its experts and the shared
    ones; one tower per task."""

    offsets: Tensor

    def __init__(
        self,
        cardinalities: list[int],
        genres: int,
        ratings: int,
        numeric: int,
        *,
        dim: int,
        numeric_dim: int,
        movie: int,
        tasks: int,
        task_experts: int,
        shared_experts: int,
        units: int,
        tower: int,
        attention: int,
        softmax: bool,
    ) -> None:
        super().__init__()
        self.softmax = softmax
        sizes = torch.tensor(cardinalities)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes)
        self.movie_offset = int(self.offsets[movie])
        self.movie = movie
        self.table = nn.Embedding(int(sizes.sum()), dim)
        self.genres = nn.Embedding(genres, dim)
        self.ratings = nn.Embedding(ratings, dim)
        for table in (self.table, self.genres, self.ratings):
            nn.init.normal_(table.weight, std=0.05)
        self.attention = nn.Sequential(
            nn.Linear(4 * dim, attention), nn.ReLU(), nn.Linear(attention, 1)
        )
        self.numeric = nn.Linear(numeric, numeric_dim)
        width = (len(cardinalities) + 3) * dim + numeric_dim
        self.tasks, self.te, self.se = tasks, task_experts, shared_experts
        experts = tasks * task_experts + shared_experts
        self.experts = nn.Linear(width, experts * units)
        self.units = units
        self.gates = nn.Linear(width, tasks * (task_experts + shared_experts))
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(units, tower), nn.ReLU(), nn.Linear(tower, 1))
            for _ in range(tasks)
        )

    @staticmethod
    def mean(table: nn.Embedding, values: Tensor) -> Tensor:
        mask = (values != 0).float()
        pooled = torch.bmm(mask.unsqueeze(1), table.weight[values]).squeeze(1)
        return pooled / mask.sum(1, keepdim=True).clamp(min=1)

    def forward(
        self, cat: Tensor, num: Tensor, genres: Tensor, history: Tensor, ratings: Tensor
    ) -> Tensor:
        b = cat.shape[0]
        w = self.table.weight
        single = w[cat + self.offsets]  # [B, C, D]
        g = self.mean(self.genres, genres)
        r = self.mean(self.ratings, ratings)
        hm = history != 0
        h = w[history + self.movie_offset]  # [B, L, D]
        q = single[:, self.movie].unsqueeze(1).expand_as(h)
        score = self.attention(torch.cat([h, q, h - q, h * q], -1)).squeeze(-1)
        if self.softmax:
            score = score.masked_fill(~hm, float("-inf")).softmax(-1)
        score = torch.where(hm, score, 0.0)
        pooled = torch.bmm(score.unsqueeze(1), h).squeeze(1)
        x = torch.cat([single.flatten(1), g, pooled, r, self.numeric(num)], 1)
        e = torch.relu(self.experts(x)).view(b, -1, self.units)  # [B, E, U]
        gates = self.gates(x).view(b, self.tasks, self.te + self.se).softmax(-1)
        shared = e[:, self.tasks * self.te :]
        outs = []
        for k in range(self.tasks):
            mine = torch.cat([e[:, k * self.te : (k + 1) * self.te], shared], 1)
            mixed = torch.bmm(gates[:, k].unsqueeze(1), mine).squeeze(1)
            outs.append(self.towers[k](mixed))
        return torch.cat(outs, 1)


def throughput(args: argparse.Namespace) -> None:
    from polytask import MultiTaskModel
    from polytask.config import EstimatorConfig
    from polytask.data import Preprocessor
    from polytask.datasets import load_movielens_100k, split_by_column

    torch.set_num_threads(args.threads)
    train = split_by_column(load_movielens_100k(args.data / "movielens-100k"))[0]
    train = train.iloc[: args.rows]
    base = settings(args.epochs, args.threads, args.unnormalised)
    cfg = EstimatorConfig.model_validate(base)
    pre = Preprocessor(features=cfg.features, tasks=cfg.task_specs())
    data = pre.fit_transform(train)
    f = cfg.features
    names = [c.name for c in f.single]
    tasks = list(cfg.tasks)
    model_cfg = base["model"]
    hand_kw = dict(
        dim=f.embedding_dim,
        numeric_dim=f.numeric_dim or min(f.embedding_dim * len(f.numeric), 128),
        movie=names.index("movie_id"),
        tasks=len(tasks),
        task_experts=model_cfg["num_task_experts"],
        shared_experts=model_cfg["num_shared_experts"],
        units=model_cfg["expert_units"][0],
        tower=model_cfg["tower_units"][0],
        attention=32,
        softmax=next(c for c in f.lists if c.name == "history").attention_softmax,
    )
    batch = base["training"]["batch_size"]
    labels = torch.stack([data.labels[t] for t in tasks], 1)
    regression = torch.tensor([cfg.tasks[t].type == "regression" for t in tasks])

    def run_polytask() -> float:
        model = MultiTaskModel(**base).fit(data, preprocessor=pre, epochs=args.epochs)
        return statistics.median(r["train_samples_per_s"] for r in model.history_)

    def run_hand() -> float:
        torch.manual_seed(0)
        net = HandCGC(
            pre.cardinalities,
            pre.list_cardinalities["genres"],
            pre.list_cardinalities["history_ratings"],
            data.numeric.shape[1],
            **hand_kw,
        )
        opt = torch.optim.Adam(net.parameters(), lr=base["optimizer"]["lr"])
        n = len(data)
        rates = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            perm = torch.randperm(n)
            c, x, y = data.categorical[perm], data.numeric[perm], labels[perm]
            lists = [data.lists[name][perm] for name in ("genres", "history", "history_ratings")]
            for i in range(0, n, batch):
                out = net(c[i : i + batch], x[i : i + batch], *(v[i : i + batch] for v in lists))
                t = y[i : i + batch]
                mse = F.mse_loss(out[:, regression], t[:, regression])
                bce = F.binary_cross_entropy_with_logits(out[:, ~regression], t[:, ~regression])
                loss = mse + bce * int((~regression).sum())
                opt.zero_grad()
                loss.backward()
                opt.step()
            rates.append(n / (time.perf_counter() - start))
        return statistics.median(rates)

    ours, hand = [], []
    for r in range(args.repeats):
        ours.append(run_polytask())
        hand.append(run_hand())
        print(f"repeat {r}: polytask {ours[-1]:,.0f}/s  hand-written {hand[-1]:,.0f}/s", flush=True)
    ratios = [a / b for a, b in zip(ours, hand, strict=True)]
    print(
        f"\ntraining samples/s on {len(data):,} rows, {args.epochs} epochs, batch {batch}, "
        f"{args.threads} thread(s), {args.repeats} alternated repeats"
    )
    print("| system | median samples/s | best | x hand (median of ratios) |")
    print("|---|---|---|---|")
    print(
        f"| polytask | {statistics.median(ours):,.0f} | {max(ours):,.0f} | "
        f"{statistics.median(ratios):.2f} |"
    )
    print(f"| hand-written | {statistics.median(hand):,.0f} | {max(hand):,.0f} | 1.00 |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["quality", "throughput"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (default: 3)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (default: 4)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated repeats (default: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=MODELS, help="(default: all)"
    )
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument(
        "--rows", type=int, default=None, help="first rows of each split only (a smoke run)"
    )
    parser.add_argument(
        "--no-user-id",
        action="store_true",
        help="leave the user_id feature out (the history is then the user's only id signal)",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="quality: also the history's movie ids alone and its ratings alone",
    )
    parser.add_argument(
        "--unnormalised",
        action="store_true",
        help="history attention without the softmax (attention_softmax: false)",
    )
    args = parser.parse_args(argv)
    args.data = args.data or shared_data_dir()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    quality(args) if args.what == "quality" else throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
