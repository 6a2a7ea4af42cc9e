"""Data-parallel training across processes launched by ``torchrun`` (PyTorch DDP).

Every process (rank) holds the whole encoded split, fitted and encoded identically (the
preprocessor is deterministic; `DistributedTraining` checks that every rank encoded the same
bytes). Every rank draws the same shuffled order from ``training.seed``, so all ranks walk the
same sequence of **global** batches of ``training.batch_size`` rows; rank ``r`` of ``W`` trains
on its contiguous share of each, rows ``[B r / W, B (r + 1) / W)``. The result matches one
process training on the same global batches, up to float summation order:

- Loss normalisation. A task's loss is the mean over the *labelled* rows of the global batch,
  ``L_k = sum_i l_ik / N_k``. DDP averages gradients over ranks, so rank ``r`` minimises
  ``l_k^r = W * n_k^r / N_k * mean_r(l_ik)`` (``n_k^r`` labelled rows in its share): the mean
  over ranks of ``l_k^r`` is exactly ``L_k``, where the plain mean of per-rank means would
  over-weight the rows of a rank with few labels. ``N_k`` needs no communication: every rank
  sees the whole global batch's labels. For a task with sample weights ``n`` and ``N`` are
  sums of the labelled rows' weights. With sharded streaming (``local_batches``) each rank
  has only its own rows and ``N_k`` is all-reduced (``K`` numbers per step).
- Loss weightings are affine in the task losses within a step (their weights are fixed for the
  step, or learned like Kendall's ``s_k``), so averaging the gradients of
  ``weighting(l^r)`` over ranks gives the gradient of ``weighting(L)``, for the network and the
  weighting's own parameters alike (both sit in the one DDP module).
- Gradient weightings (aggregators such as UPGrad or PCGrad, and GradNorm) need each task's
  gradient, which DDP's summed reduction loses. For them every rank computes the Jacobian of
  its ``l^r``, the Jacobians are all-reduced into the global ``J`` and every rank aggregates
  that same ``J``; rank 0's direction is broadcast so the replicas cannot drift apart even
  for aggregators that draw random numbers.
- Alternate training: every rank draws the same task for each step (same generator seed) and
  trains it on its share of that task's global batch.
- Validation metrics are exact over the whole split: each rank predicts a contiguous block of
  rows, the outputs are gathered in row order and rank 0 computes the metrics once and
  broadcasts them, so early stopping decides the same on every rank.

Only rank 0 writes files and progress (`is_main_process`).
"""

from __future__ import annotations

import atexit
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from polytask.data import LABEL_PREFIX, Batch, EncodedData
from polytask.data.stream import SplitShard, share
from polytask.errors import ConfigError, DataError
from polytask.metrics import all_metrics
from polytask.models import MultiTaskNet
from polytask.tasks import TaskSpec, weight_key
from polytask.training._aggregate import write_grads
from polytask.training.loops import predict_outputs
from polytask.training.settings import TrainingConfig
from polytask.training.step import Reduction, TrainStep, forward_objective
from polytask.weighting import Weighting


def is_main_process() -> bool:
    """True on rank 0 of a process group, and in a single process.

    Before the group exists (e.g. while the CLI starts) the ``RANK`` variable that torchrun
    sets decides."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the group and the device it trains on."""

    rank: int
    world_size: int
    device: torch.device


def join_process_group(device: torch.device) -> ProcessGroup | None:
    """The default process group, initialized here when torchrun launched several processes
    (``WORLD_SIZE`` > 1) and none exists yet: gloo for a CPU device, nccl for CUDA, each rank
    on ``cuda:LOCAL_RANK``. None in a single process."""
    initialized = dist.is_available() and dist.is_initialized()
    if not initialized and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_available():
        raise ConfigError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} asks for distributed training, but this "
            "PyTorch build has no torch.distributed"
        )
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not initialized:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    if dist.get_world_size() == 1:
        return None
    backend = str(dist.get_backend())
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"training.device: the process group uses nccl, which needs a CUDA device; "
            f"found {str(device)!r}"
        )
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), device)


def barrier() -> None:
    """Wait for every process of the group (a no-op in a single process)."""
    if current_group() is not None:
        dist.barrier()


def _leave() -> None:
    # Gloo's worker threads must be torn down before the interpreter finalizes, or a process
    # can abort at exit. An NCCL group is left to the process exit: destroying it while a
    # failed rank's peers wait in a collective can hang.
    if dist.is_initialized() and dist.get_backend() == "gloo":
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that ``rank`` takes: contiguous, sizes differ by at most 1."""
    return n * rank // world_size, n * (rank + 1) // world_size


def _buffer_sync(enabled: bool) -> dict[str, Any]:
    """DDP's switch for broadcasting rank 0's buffers at every forward (`_synced_buffers` says
    which need it). Renamed in recent PyTorch releases."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return {"forward_sync_buffers": enabled}
    return {"broadcast_buffers": enabled}


def _synced_buffers(network: nn.Module) -> list[Tensor]:
    """The buffers that can differ between ranks and follow rank 0: batch-norm running
    statistics (each rank updates them with its own share on CPU). Every other buffer is a
    constant or computed from reduced values."""
    return [
        b
        for m in network.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in m.buffers(recurse=False)
    ]


@torch.no_grad()
def _broadcast(tensors: list[Tensor]) -> None:
    """Rank 0's values of ``tensors`` on every rank, in place: one broadcast per dtype."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        for t, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
            t.copy_(part.view_as(t))


class _Objective(nn.Module):
    """The network and the weighting as one module, so that DDP reduces the gradients of
    both: its forward returns the weighted objective and the (rank-scaled) task losses."""

    def __init__(
        self, network: MultiTaskNet, weighting: Weighting, tasks: dict[str, TaskSpec]
    ) -> None:
        super().__init__()
        self.network = network
        self.weighting = weighting
        self.tasks = tasks

    def forward(
        self, batch: Batch, scale: Tensor, task: str | None = None
    ) -> tuple[Tensor, Tensor]:
        return forward_objective(self.network, self.weighting, self.tasks, batch, task, scale)


class DistributedTraining(Reduction):
    """The reduction of `TrainStep` and the evaluation `fit_loop` use on each rank of a
    process group.

    ``network`` and ``weighting`` must already be on ``group.device``; they are wrapped in one
    `DistributedDataParallel` module (which also broadcasts rank 0's initial parameters).
    ``fingerprint`` is the data's (`polytask.training.inputs.TrainingData.fingerprint`),
    checked to be the same on every rank. With ``local_batches`` (sharded streaming) each
    rank's batches are its own rows, not a global batch.
    """

    def __init__(
        self,
        group: ProcessGroup,
        *,
        network: MultiTaskNet,
        weighting: Weighting,
        tasks: dict[str, TaskSpec],
        training: TrainingConfig,
        fingerprint: str,
        local_batches: bool = False,
    ) -> None:
        self.rank, self.world_size, self.device = group.rank, group.world_size, group.device
        self.local_batches = local_batches
        if training.batch_size < self.world_size:
            raise ConfigError(
                f"training.batch_size is the global batch, shared by the {self.world_size} "
                f"processes: expected at least {self.world_size}, found {training.batch_size}"
            )
        digests: list[Any] = [None] * self.world_size
        dist.all_gather_object(digests, fingerprint)
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise DataError(
                f"distributed training: the data encoded on rank(s) {differ} differ from rank "
                "0's; every process must read the same tables with the same config"
            )
        self.network, self.weighting, self.tasks = network, weighting, tasks
        self.names = list(tasks)
        self.module = _Objective(network, weighting, tasks)
        has_batch_norm = bool(_synced_buffers(network))
        if has_batch_norm and self.device.type == "cuda":
            # Statistics over the global batch, as one process would compute them.
            nn.SyncBatchNorm.convert_sync_batchnorm(self.module)
        self._synced = _synced_buffers(network)
        self.ddp = DistributedDataParallel(
            self.module,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            # Alternate steps leave the other tasks' towers and gates out of the graph; their
            # gradients then stay None on every rank, as in one process.
            find_unused_parameters=training.schedule == "alternate",
            **_buffer_sync(has_batch_norm),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sync_buffers(self) -> None:
        """Rank 0's batch-norm running statistics on every rank (a collective; nothing to do
        without batch norm). DDP does this at the start of each of its forwards, but the last
        one of an epoch leaves every rank with statistics updated by its own share, and the
        gradient-weighting step runs the network without DDP."""
        if self._synced:
            _broadcast(self._synced)

    # ---------------------------------------------------------------- the step's reduction
    def _amounts(self, batch: Batch) -> Tensor:
        """``[K]`` what each task's loss averages over in ``batch``: its labelled rows, or
        the sum of their weights for a task with ``sample_weight``."""
        amounts = []
        for t in self.names:
            labelled = ~torch.isnan(batch[LABEL_PREFIX + t])
            w = batch.get(LABEL_PREFIX + weight_key(t)) if self.tasks[t].sample_weight else None
            amount = labelled if w is None else torch.where(labelled, w, 0.0)
            amounts.append(amount.sum().to(torch.float64))
        return torch.stack(amounts)

    def shard(self, batch: Batch) -> tuple[Batch, Tensor]:
        """This rank's rows of a global batch and the per-task loss scale
        ``W * n_k^r / N_k`` (0 for a task with no label in the global batch), where ``n``
        counts labelled rows, or sums their weights for a weighted task. With local batches
        (sharded streaming) the batch is this rank's already and ``N_k`` is all-reduced."""
        if self.local_batches:
            mine = self._amounts(batch)
            total = mine.clone()
            dist.all_reduce(total)
            local = batch
        else:
            n = len(batch["categorical"])
            lo, hi = shard_bounds(n, self.rank, self.world_size)
            local = {k: v[lo:hi] for k, v in batch.items()}
            total, mine = self._amounts(batch), self._amounts(local)
        # DDP averages the ranks' gradients. With this scale the average of the ranks' losses
        # is sum(w_i l_ik) / sum(w_i), the global batch's (weighted) mean over its labelled
        # rows, where a plain mean of per-rank means would favour a rank with few labels.
        scale = torch.where(total > 0, self.world_size * mine / total, 0.0)
        return local, scale.to(torch.float32)

    def objective(
        self, step: TrainStep, batch: Batch, scale: Tensor | None, task: str | None
    ) -> tuple[Tensor, Tensor]:
        """Through the DDP module, whose backward averages the gradients over ranks."""
        return self.ddp(batch, scale, task)

    def prepare(self) -> None:
        # A gradient-weighting step runs the network without DDP (its reducer only averages
        # summed gradients): rank 0's batch-norm statistics, as DDP's forward would.
        self.sync_buffers()

    def mean(self, values: Tensor) -> Tensor:
        values = values.detach().clone()
        dist.all_reduce(values)
        return values / self.world_size

    def same(self, values: Tensor) -> Tensor:
        # Rank 0's direction: replicas cannot drift apart, even for aggregators that draw
        # random numbers.
        values = values.detach().contiguous().clone()
        dist.broadcast(values, src=0)
        return values

    def average_grads(self, params: list[nn.Parameter], objective: Tensor) -> Tensor:
        grads = [(p, g) for p in params if (g := p.grad) is not None]
        flat = self.mean(torch.cat([*(g.reshape(-1) for _, g in grads), objective.reshape(1)]))
        write_grads([p for p, _ in grads], flat[:-1])
        return flat

    # ------------------------------------------------------------------------------ metrics
    def evaluate(
        self,
        model: MultiTaskNet,
        tasks: dict[str, TaskSpec],
        data: EncodedData | SplitShard,
        batch_size: int,
    ) -> dict[str, dict[str, float]]:
        """`evaluate_split` with each rank predicting a block of rows: exact metrics over all
        rows in their original order, the same dict on every rank. A `SplitShard` (a
        split no rank holds whole) is predicted by each rank over its own row groups, and
        rank 0 gathers the outputs and labels (`evaluate_shard`)."""
        self.sync_buffers()  # every rank predicts its block with the same model
        if isinstance(data, SplitShard):
            return evaluate_shard(model, data, batch_size, self.device, partial(all_metrics, tasks))
        n = len(data)
        if n < self.world_size:
            outputs = predict_outputs(model, data, batch_size)
        else:
            lo, hi = shard_bounds(n, self.rank, self.world_size)
            block = data.select(slice(lo, hi))
            mine = predict_outputs(model, block, batch_size)
            outputs = {name: self._gather_rows(mine[name], n) for name in mine}
        metrics = None
        if self.is_main:
            labels = {name: v.cpu().numpy() for name, v in data.labels.items()}  # weights too
            metrics = all_metrics(tasks, outputs, labels)
        # One computation, broadcast: ranks on different machines could round differently,
        # and early stopping must decide the same everywhere.
        return broadcast_from_main(metrics, self.device)

    def _gather_rows(self, mine: np.ndarray, n: int) -> np.ndarray:
        """This rank's block of rows -> all ``n`` rows in order (blocks padded to one size)."""
        sizes = [share(n, r, self.world_size) for r in range(self.world_size)]
        local = torch.from_numpy(mine).to(self.device)
        padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).cpu().numpy()


def shard_outputs(
    model: MultiTaskNet, shard: SplitShard, batch_size: int, device: torch.device
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """This rank's outputs and encoded labels (and weights) over its row groups of
    ``shard``, read and predicted chunk by chunk: the features of one chunk at a time."""
    outputs: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    for chunk in shard.chunks():
        for name, out in predict_outputs(model, chunk.to(device), batch_size).items():
            outputs.setdefault(name, []).append(out)
        for name, y in chunk.labels.items():
            labels.setdefault(name, []).append(y.numpy())
    return (
        {k: np.concatenate(v) for k, v in outputs.items()},
        {k: np.concatenate(v) for k, v in labels.items()},
    )


def gather_on_main(
    outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """Every rank's outputs and labels, concatenated in rank order, on rank 0 (None on the
    others). A collective; what crosses the wire is the arrays, not the feature columns."""
    parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object((outputs, labels), parts, dst=0)
    if parts is None:
        return None
    filled = [p for p in parts if p[1]]  # a rank with no row group sent nothing
    if not filled:
        return {}, {}
    names_out, names_lab = filled[0][0].keys(), filled[0][1].keys()
    return (
        {k: np.concatenate([p[0][k] for p in filled]) for k in names_out},
        {k: np.concatenate([p[1][k] for p in filled]) for k in names_lab},
    )


def evaluate_shard(
    model: MultiTaskNet,
    shard: SplitShard,
    batch_size: int,
    device: torch.device,
    metrics: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], Any],
    *,
    distributed: bool = True,
) -> Any:
    """``metrics(outputs, labels)`` over the whole split of ``shard``, the same value on every
    rank: each rank predicts its row groups, rank 0 gathers outputs and labels (about ``4 x
    (output columns + labels)`` bytes per row of the split: 16 B for two binary tasks),
    computes the metrics once and broadcasts them. A collective; without ``distributed``
    one process reads the whole split."""
    outputs, labels = shard_outputs(model, shard, batch_size, device)
    if not distributed:
        return metrics(outputs, labels)
    gathered = gather_on_main(outputs, labels)
    return broadcast_from_main(None if gathered is None else metrics(*gathered), device)


def current_group() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the initialized process group of several processes; None
    in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


def broadcast_from_main(value: Any, device: torch.device) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank. A collective."""
    box = [value]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]
