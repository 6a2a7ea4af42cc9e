"""POS tagging and chunking on CoNLL-2000: chunking alone, POS alone, both at the top of a
2-layer BiLSTM, POS supervised at the inner layer (Søgaard & Goldberg, ACL 2016), and
alternate training on two halves of the training sentences (one labelled with POS only, the
other with chunks only: the setting of the write-up ../shared/seeds/003). Several seeds; the
test set's chunk F1 (conlleval) and POS accuracy, mean and spread. Then training tokens/s of
`MultiTaskModel.fit` against a hand-written PyTorch loop of the same network on the same
batches.

No variant here feeds POS into the chunk tower (``inputs_from``): the comparison is of where
each task is supervised. The example run file (examples/conll2000_pos_chunk.yaml) adds it.

    python benchmarks/conll2000.py                       # the README's figures
    python benchmarks/conll2000.py --sentences 0 --epochs 12 --hidden 128   # all of train
    python benchmarks/conll2000.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from polytask import MultiTaskModel
from polytask.data.conll import read_conll

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/conll2000"
COLUMNS = ["word", "pos", "chunk"]
VARIANTS: dict[str, dict[str, Any]] = {
    "chunk_alone": {"chunk": {"type": "tag"}},
    "pos_alone": {"pos": {"type": "tag"}},
    "joint_top": {"pos": {"type": "tag"}, "chunk": {"type": "tag"}},
    "pos_inner": {"pos": {"type": "tag", "layer": 1}, "chunk": {"type": "tag"}},
    "alternate": {"pos": {"type": "tag", "layer": 1}, "chunk": {"type": "tag"}},
}


def config(tasks: dict[str, Any], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "features": {
            "tokens": {
                "column": "word",
                "min_freq": 2,
                "embedding_dim": args.embedding_dim,
                "char_filters": args.char_filters,
                "shape_dim": args.shape_dim,
            }
        },
        "tasks": tasks,
        "model": {
            "name": "bilstm",
            "layers": 2,
            "hidden": args.hidden,
            "input_dropout": 0.3,
            "dropout_between": 0.3,
        },
        "optimizer": {"lr": 0.003},
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": seed,
            "progress": False,
            "schedule": "alternate" if "pos" in tasks and args.variant == "alternate" else "joint",
        },
    }


def run_variant(
    name: str, args: argparse.Namespace, train: pd.DataFrame, valid: pd.DataFrame,
    test: pd.DataFrame, seed: int,
) -> tuple[dict[str, float], float]:  # fmt: skip
    """Fit one variant with one seed: its test metrics and the fit's seconds."""
    args.variant = name
    tasks = VARIANTS[name]
    cfg = config(tasks, args, seed)
    cfg["training"]["monitor"] = "chunk.f1" if "chunk" in tasks else "pos.accuracy"
    torch.manual_seed(seed)
    model = MultiTaskModel(**cfg)
    columns = ["word", *tasks]
    start = time.perf_counter()
    if name == "alternate":  # half the sentences labelled with POS, the other half chunks
        half = len(train) // 2
        pos_set = train.iloc[:half][["word", "pos"]]
        chunk_set = train.iloc[half:][["word", "chunk"]]
        model.fit({"pos": pos_set, "chunk": chunk_set}, valid[columns])
    else:
        model.fit(train[columns], valid[columns])
    seconds = time.perf_counter() - start
    m = model.evaluate(test[columns])
    out = {}
    if "chunk" in m:
        out["chunk_f1"] = m["chunk"]["f1"]
    if "pos" in m:
        out["pos_accuracy"] = m["pos"]["accuracy"]
    return out, seconds


# ------------------------------------------------------------------ the hand-written loop


class HandBiLSTM(nn.Module):
    """The network `MultiTaskModel` builds for ``pos_inner``, written out: word, shape and char
    CNN embeddings, two BiLSTM layers on packed sequences, a linear POS head on layer 1 and a
    linear chunk head on layer 2."""

    def __init__(self, sizes: list[int], args: argparse.Namespace, n_pos: int, n_chunk: int):
        super().__init__()
        self.words = nn.Embedding(sizes[0], args.embedding_dim, padding_idx=0)
        self.shapes = nn.Embedding(sizes[1], args.shape_dim, padding_idx=0)
        self.chars = nn.Embedding(sizes[2], 16, padding_idx=0)
        self.conv = nn.Conv1d(16, args.char_filters, 3, padding=1)
        width = args.embedding_dim + args.shape_dim + args.char_filters
        self.drop = nn.Dropout(0.3)
        self.lstm1 = nn.LSTM(width, args.hidden, batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(2 * args.hidden, args.hidden, batch_first=True, bidirectional=True)
        self.pos = nn.Linear(2 * args.hidden, n_pos)
        self.chunk = nn.Linear(2 * args.hidden, n_chunk)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        chars = x[..., 2:].reshape(b * t, -1)
        h = self.conv(self.chars(chars).transpose(1, 2))
        h = h.masked_fill((chars == 0).unsqueeze(1), float("-inf")).amax(2)
        h = torch.where(torch.isfinite(h), h, 0.0).reshape(b, t, -1)
        e = self.drop(torch.cat([self.words(x[..., 0]), self.shapes(x[..., 1]), h], -1))
        pack = nn.utils.rnn.pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
        p1, _ = self.lstm1(pack)
        p1 = nn.utils.rnn.PackedSequence(self.drop(p1.data), *p1[1:])
        p2, _ = self.lstm2(p1)
        p2 = nn.utils.rnn.PackedSequence(self.drop(p2.data), *p2[1:])
        h1, _ = nn.utils.rnn.pad_packed_sequence(p1, batch_first=True, total_length=t)
        h2, _ = nn.utils.rnn.pad_packed_sequence(p2, batch_first=True, total_length=t)
        return self.pos(h1), self.chunk(h2)


def throughput(args: argparse.Namespace, train: pd.DataFrame) -> dict[str, float]:
    """Training tokens/s of `MultiTaskModel.fit` (``pos_inner``, no validation; masked and
    packed BiLSTM) and of the hand-written loop (packed, as one usually writes it) over the
    same encoded sentences: the second of two epochs each."""
    tokens = int(train["word"].map(len).sum())
    args.variant = "pos_inner"
    speeds = {}
    for packed in (False, True):
        cfg = config(VARIANTS["pos_inner"], args, 0)
        cfg["training"]["epochs"] = 2
        cfg["model"]["packed"] = packed
        model = MultiTaskModel(**cfg).fit(train[COLUMNS])
        per_s = model.history_[-1]["train_samples_per_s"]
        speeds["packed" if packed else "masked"] = per_s * tokens / len(train)

    pre = model.preprocessor_
    data = pre.transform(train[COLUMNS], labels=True)
    torch.manual_seed(0)
    net = HandBiLSTM(pre.cardinalities, args, pre.num_classes("pos"), pre.num_classes("chunk"))
    opt = torch.optim.Adam(net.parameters(), lr=0.003)
    g = torch.Generator().manual_seed(0)
    seconds = 0.0
    for _epoch in range(2):
        start = time.perf_counter()
        order = torch.randperm(len(data), generator=g)
        cat, y_pos, y_chunk = (
            data.categorical[order],
            data.labels["pos"][order],
            data.labels["chunk"][order],
        )
        for i in range(0, len(data), args.batch_size):
            x = cat[i : i + args.batch_size]
            lengths = (x[..., 0] > 0).sum(1)
            x = x[:, : int(lengths.max())]
            yp, yc = (y[i : i + args.batch_size, : x.shape[1]] for y in (y_pos, y_chunk))
            pos, chunk = net(x, lengths)
            real = ~torch.isnan(yp)
            loss = nn.functional.cross_entropy(pos[real], yp[real].long())
            loss = loss + nn.functional.cross_entropy(chunk[real], yc[real].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
    return {
        "polytask_masked_tokens_per_s": speeds["masked"],
        "polytask_packed_tokens_per_s": speeds["packed"],
        "hand_tokens_per_s": tokens / seconds,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--sentences", type=int, default=3000, help="training sentences (0: all 8,936)"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=50)
    parser.add_argument("--char-filters", type=int, default=20)
    parser.add_argument("--shape-dim", type=int, default=8, help="0: no word-shape feature")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-throughput", action="store_true", help="skip the tokens/s part")
    parser.add_argument("--smoke", action="store_true", help="tiny run: checks the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sentences, args.epochs, args.hidden, args.seeds = 200, 1, 8, 1
        args.embedding_dim, args.char_filters = 8, 4
    torch.set_num_threads(args.threads)
    train_all = read_conll(args.data / "train.txt", COLUMNS, what="train.txt")
    test = read_conll(args.data / "test.txt", COLUMNS, what="test.txt")
    if args.smoke:
        test = test.iloc[:100]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train_all))
    n_valid = len(train_all) // 10  # the same 10% held out whatever --sentences says
    valid = train_all.iloc[order[:n_valid]].reset_index(drop=True)
    rest = train_all.iloc[order[n_valid:]].reset_index(drop=True)
    train = rest if args.sentences == 0 else rest.iloc[: args.sentences]
    print(
        f"CoNLL-2000: {len(train):,} training sentences ({int(train['word'].map(len).sum()):,} "
        f"tokens), {len(valid):,} validation, {len(test):,} test; BiLSTM 2 layers x "
        f"{args.hidden} per direction, {args.epochs} epochs, seeds 0..{args.seeds - 1}, "
        f"{args.threads} thread(s)"
    )
    results: dict[str, Any] = {}
    for name in args.variants:
        runs = [run_variant(name, args, train, valid, test, seed) for seed in range(args.seeds)]
        summary: dict[str, Any] = {"seconds": statistics.mean(s for _, s in runs)}
        for metric in runs[0][0]:
            values = [r[metric] for r, _ in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[metric] = (statistics.mean(values), spread, values)
        results[name] = summary
        shown = "  ".join(
            f"{m} {v[0]:.4f} ± {v[1]:.4f}" for m, v in summary.items() if m != "seconds"
        )
        print(f"{name:12s} {shown}   ({summary['seconds']:.0f} s per fit)", flush=True)
    if args.no_throughput:
        return results
    speed = throughput(args, train)
    results["throughput"] = speed
    hand = speed["hand_tokens_per_s"]
    print(
        f"training tokens/s: polytask fit {speed['polytask_masked_tokens_per_s']:,.0f} (masked, "
        f"the default; {speed['polytask_masked_tokens_per_s'] / hand:.2f}x the hand loop), "
        f"{speed['polytask_packed_tokens_per_s']:,.0f} (packed; "
        f"{speed['polytask_packed_tokens_per_s'] / hand:.2f}x); hand-written loop (packed) "
        f"{hand:,.0f}"
    )
    return results


if __name__ == "__main__":
    main()
