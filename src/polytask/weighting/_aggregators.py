"""Gradient aggregators from torchjd, applied to the shared parameters.

Each class adapts one ``torchjd.aggregation`` aggregator (the algorithm lives there; see its
docstring for details): the training step hands it the Jacobian ``J [K, n]`` of the task losses
with respect to every shared parameter (everything outside the towers), the aggregator maps
``J`` to one update direction for them, and the towers keep their plain gradients (those of
``sum_k L_k``; a tower only feels its own task's loss, plus that of tasks it feeds without
stop-gradient). Cost per step: one batched (vmapped) backward pass for the K rows of ``J``, one
backward pass through the towers, and the aggregator itself (a K x K problem for most).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from polytask.errors import MissingExtraError, install_hint
from polytask.tasks import TaskSpec
from polytask.weighting.base import GradientUpdate, GradientWeighting, NoParams


class _LazyModule:
    """A module imported on first attribute access: torchjd brings in scipy, cvxpy and the QP
    solvers (seconds at startup), which only the aggregator weightings need."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


if TYPE_CHECKING:
    from torchjd import aggregation as agg
    from torchjd import linalg
else:
    agg = _LazyModule("torchjd.aggregation")
    linalg = _LazyModule("torchjd.linalg")


def require_extra(weighting: str, extra: str, modules: tuple[str, ...]) -> None:
    """Raise `MissingExtraError` (a `ConfigError`) naming the pip extra when a module it
    installs cannot be imported."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"weighting {weighting!r} needs {missing}, which could not be imported; "
            f"install them with: {install_hint(extra)}"
        )


def per_task(
    values: Mapping[str, float] | None, tasks: Mapping[str, TaskSpec], what: str
) -> Tensor | None:
    """A ``{task: value}`` mapping as a vector in task order; every task must be named."""
    if values is None:
        return None
    missing = [t for t in tasks if t not in values]
    unknown = [t for t in values if t not in tasks]
    if missing or unknown:
        raise ValueError(
            f"{what}: expected one value for each task {list(tasks)}, found {dict(values)} "
            f"(missing {missing}, unknown {unknown})"
        )
    return torch.tensor([float(values[t]) for t in tasks])


class Aggregation(GradientWeighting):
    """Shared parameters step along ``aggregator(J)``; towers get their plain gradients.

    ``weight.<task>`` in the history is the epoch's mean weight of task k's gradient, for
    aggregators whose output is a weighted sum of the rows of ``J``.
    """

    def __init__(
        self,
        *,
        tasks: Mapping[str, TaskSpec],
        aggregator: agg.Aggregator,
        name: str | None = None,
    ) -> None:
        super().__init__(tasks=tasks)
        self.name = name or type(aggregator).__name__
        # Kept out of the module tree on purpose: some aggregators (GradVac, ExcessMTL) create
        # buffers lazily on their first call, which would make the saved weighting's state_dict
        # differ from a freshly built one and break loading.
        object.__setattr__(self, "aggregator", aggregator)
        self.aggregator: agg.Aggregator
        self._weight_sum: Tensor | None = None
        self._weight_steps = 0
        self._step_weights: Tensor | None = None
        self._epoch_weights: list[float] | None = None
        if isinstance(aggregator, agg.WeightedAggregator):
            # The torchjd way to read the weights (as `jac_to_grad` does): a hook on the weighting.
            aggregator.weighting.register_forward_hook(self._record_weights)

    def _record_weights(self, _module: Any, _inputs: Any, weights: Tensor) -> None:
        # Kept for `after_step`, which adds them up: only steps that were applied (whose
        # update was finite) count, and nothing reads the device here.
        self._step_weights = weights.detach()

    def combine(self, losses: Tensor, jacobian: Tensor) -> GradientUpdate:
        return GradientUpdate(direction=self.aggregator(jacobian), objective=losses.sum())

    def after_step(self) -> None:
        w, self._step_weights = self._step_weights, None
        if w is not None:
            total = self._weight_sum
            self._weight_sum = w if total is None else total.to(w.device) + w
            self._weight_steps += 1

    def epoch_end(self, mean_losses: Tensor) -> None:
        if self._weight_sum is not None:
            self._epoch_weights = (self._weight_sum / self._weight_steps).tolist()
        self._weight_sum, self._weight_steps = None, 0

    def report(self) -> dict[str, float]:
        if self._epoch_weights is None:
            return {}
        return {f"weight.{n}": w for n, w in zip(self.task_names, self._epoch_weights, strict=True)}

    def state_for_checkpoint(self) -> dict[str, Any]:
        """The epoch's running weight sums, so a resumed epoch reports the same mean weights.
        The aggregator's own state (Nash-MTL, GradVac, ExcessMTL) is not included: torchjd
        offers no way to read and restore it, so those restart on resume."""
        total = None if self._weight_sum is None else self._weight_sum.tolist()
        return {"weight_sum": total, "weight_steps": self._weight_steps}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        total = state.get("weight_sum")
        self._weight_sum = None if total is None else torch.tensor(total)
        self._weight_steps = int(state.get("weight_steps", 0))

    def extra_repr(self) -> str:
        return f"{self.name}: {self.aggregator!r}"


# The presets: one function per registry name, ``build(tasks=..., params=...)``.


class ProjectionParams(NoParams):
    pref_vector: dict[str, float] | None = Field(
        default=None, description="task -> preference; default uniform"
    )
    norm_eps: float = Field(default=1e-4, ge=0, description="QP solver: Gramian normalisation")
    reg_eps: float = Field(default=1e-4, ge=0, description="QP solver: ridge on the Gramian")


def upgrad(*, tasks: Mapping[str, TaskSpec], params: ProjectionParams) -> Aggregation:
    """Projects each task gradient onto the dual cone of all of them and averages: a direction
    that conflicts with no task (Quinton & Rey, "Jacobian Descent for Multi-Objective
    Optimization", arXiv:2406.16232, 2024). Needs ``polytask[quadprog]``."""
    require_extra("upgrad", "quadprog", ("numpy", "qpsolvers", "quadprog"))
    projector = linalg.QuadprogProjector(norm_eps=params.norm_eps, reg_eps=params.reg_eps)
    pref = per_task(params.pref_vector, tasks, "upgrad pref_vector")
    return Aggregation(tasks=tasks, aggregator=agg.UPGrad(pref, projector=projector), name="upgrad")


def dualproj(*, tasks: Mapping[str, TaskSpec], params: ProjectionParams) -> Aggregation:
    """Averages the task gradients, then projects the mean onto their dual cone (Lopez-Paz &
    Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017, eq. 11; as an
    aggregator in Quinton & Rey 2024). Needs ``polytask[quadprog]``."""
    require_extra("dualproj", "quadprog", ("numpy", "qpsolvers", "quadprog"))
    projector = linalg.QuadprogProjector(norm_eps=params.norm_eps, reg_eps=params.reg_eps)
    pref = per_task(params.pref_vector, tasks, "dualproj pref_vector")
    aggregator = agg.DualProj(pref, projector=projector)
    return Aggregation(tasks=tasks, aggregator=aggregator, name="dualproj")


class MGDAParams(NoParams):
    epsilon: float = Field(default=1e-3, gt=0, description="stop when the step falls below this")
    max_iters: int = Field(default=100, ge=1)


def mgda(*, tasks: Mapping[str, TaskSpec], params: MGDAParams) -> Aggregation:
    """Minimum-norm point of the convex hull of the task gradients (Désidéri, "Multiple-gradient
    descent algorithm (MGDA) for multiobjective optimization", C. R. Math. 2012; Sener & Koltun,
    "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, Frank-Wolfe solver)."""
    aggregator = agg.MGDA(epsilon=params.epsilon, max_iters=params.max_iters)
    return Aggregation(tasks=tasks, aggregator=aggregator, name="mgda")


def pcgrad(*, tasks: Mapping[str, TaskSpec], params: NoParams) -> Aggregation:
    """Projects each task gradient off the normal plane of every task gradient it conflicts
    with, in random order, and sums (Yu et al., "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020)."""
    return Aggregation(tasks=tasks, aggregator=agg.PCGrad(), name="pcgrad")


class CAGradParams(NoParams):
    c: float = Field(
        default=0.4, ge=0, description="radius of the ball around the mean gradient (paper: 0.4)"
    )
    norm_eps: float = Field(default=1e-4, ge=0)


def cagrad(*, tasks: Mapping[str, TaskSpec], params: CAGradParams) -> Aggregation:
    """Maximises the worst task's improvement within a ball of radius ``c ||g_0||`` around the
    mean gradient ``g_0`` (Liu et al., "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021). ``c = 0`` is the mean gradient. Needs ``polytask[cagrad]``."""
    require_extra("cagrad", "cagrad", ("numpy", "cvxpy", "clarabel"))
    aggregator = agg.CAGrad(c=params.c, norm_eps=params.norm_eps)
    return Aggregation(tasks=tasks, aggregator=aggregator, name="cagrad")


def imtl_g(*, tasks: Mapping[str, TaskSpec], params: NoParams) -> Aggregation:
    """Weights the task gradients so that the update has equal projections on every task's
    unit gradient (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021; torchjd's
    generalisation to linearly dependent gradients)."""
    return Aggregation(tasks=tasks, aggregator=agg.IMTLG(), name="imtl_g")


class AlignedMTLParams(NoParams):
    pref_vector: dict[str, float] | None = Field(
        default=None, description="task -> preference; default uniform"
    )
    scale_mode: Literal["min", "median", "rmse"] = Field(
        default="min", description="eigenvalue that sets the scale of the aligned gradients"
    )


def aligned_mtl(*, tasks: Mapping[str, TaskSpec], params: AlignedMTLParams) -> Aggregation:
    """Aligns the principal components of the task gradients so the Gramian is a multiple of
    the identity, then combines them (Senushkin et al., "Independent Component Alignment for
    Multi-Task Learning", CVPR 2023)."""
    pref = per_task(params.pref_vector, tasks, "aligned_mtl pref_vector")
    aggregator = agg.AlignedMTL(pref, scale_mode=params.scale_mode)
    return Aggregation(tasks=tasks, aggregator=aggregator, name="aligned_mtl")


class NashMTLParams(NoParams):
    max_norm: float = Field(default=1.0, ge=0, description="clip ||J^T w||; 0 disables")
    update_weights_every: int = Field(default=1, ge=1, description="re-solve every n steps")
    optim_niter: int = Field(default=20, ge=1, description="solver iterations")


def nash_mtl(*, tasks: Mapping[str, TaskSpec], params: NashMTLParams) -> Aggregation:
    """Nash bargaining solution: weights ``w`` with ``(J J^T) w = 1 / w`` (Navon et al.,
    "Multi-Task Learning as a Bargaining Game", ICML 2022). Stateful; a convex solve per step
    (``update_weights_every`` trades accuracy for speed). Needs ``polytask[nash-mtl]``."""
    require_extra("nash_mtl", "nash-mtl", ("numpy", "cvxpy", "ecos"))
    aggregator = agg.NashMTL(
        n_tasks=len(tasks),
        max_norm=params.max_norm,
        update_weights_every=params.update_weights_every,
        optim_niter=params.optim_niter,
    )
    return Aggregation(tasks=tasks, aggregator=aggregator, name="nash_mtl")


class GradVacParams(NoParams):
    beta: float = Field(default=0.5, ge=0, le=1, description="EMA decay of the target cosines")
    eps: float = Field(default=1e-8, ge=0)


def gradvac(*, tasks: Mapping[str, TaskSpec], params: GradVacParams) -> Aggregation:
    """Nudges each pair of task gradients toward an EMA target cosine similarity, not only away
    from conflict (Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021). Stateful; random pair order."""
    aggregator = agg.GradVac(beta=params.beta, eps=params.eps)
    return Aggregation(tasks=tasks, aggregator=aggregator, name="gradvac")


class GradDropParams(NoParams):
    leak: dict[str, float] | None = Field(
        default=None, description="task -> fraction of its gradient kept whatever the sign"
    )


def graddrop(*, tasks: Mapping[str, TaskSpec], params: GradDropParams) -> Aggregation:
    """Keeps, per coordinate, the gradients of one sign chosen at random in proportion to the
    sign purity (Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient
    Sign Dropout", NeurIPS 2020). Random; applied to all shared parameters at once."""
    leak = per_task(params.leak, tasks, "graddrop leak")
    return Aggregation(tasks=tasks, aggregator=agg.GradDrop(leak=leak), name="graddrop")


class ConFIGParams(NoParams):
    pref_vector: dict[str, float] | None = Field(
        default=None, description="task -> preference; default 1 each"
    )


def conflict_free(*, tasks: Mapping[str, TaskSpec], params: ConFIGParams) -> Aggregation:
    """A direction with equal positive cosine to every task gradient, scaled by the sum of
    their projections on it (Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of
    Physics Informed Neural Networks", ICLR 2025)."""
    pref = per_task(params.pref_vector, tasks, "config pref_vector")
    return Aggregation(tasks=tasks, aggregator=agg.ConFIG(pref), name="config")


class FairGradParams(NoParams):
    alpha: float = Field(
        default=1.0, gt=0, description="alpha-fairness: 1 proportional fairness, large max-min"
    )
    max_iters: int | None = Field(default=None, ge=1, description="solver iterations")


def fairgrad(*, tasks: Mapping[str, TaskSpec], params: FairGradParams) -> Aggregation:
    """Weights from alpha-fair utility maximisation over the tasks' improvements (Ban & Ji,
    "Fair Resource Allocation in Multi-Task Learning", ICML 2024)."""
    aggregator = agg.FairGrad(alpha=params.alpha, max_iters=params.max_iters)
    return Aggregation(tasks=tasks, aggregator=aggregator, name="fairgrad")


class ExcessMTLParams(NoParams):
    robust_step_size: float = Field(default=1.0, gt=0, description="exponentiated-gradient step")
    n_warmup_steps: int = Field(default=0, ge=0, description="uniform-weight steps first")


def excess_mtl(*, tasks: Mapping[str, TaskSpec], params: ExcessMTLParams) -> Aggregation:
    """Weights tasks by their estimated excess risk (distance to their own optimum), updated by
    exponentiated gradient (He et al., "Robust Multi-Task Learning with Excess Risks", ICML
    2024). Stateful."""
    aggregator = agg.ExcessMTL(
        robust_step_size=params.robust_step_size, n_warmup_steps=params.n_warmup_steps
    )
    return Aggregation(tasks=tasks, aggregator=aggregator, name="excess_mtl")


def rgw(*, tasks: Mapping[str, TaskSpec], params: NoParams) -> Aggregation:
    """Random gradient weighting: the task gradients combined with ``softmax(N(0, I))``
    weights redrawn every step (Lin et al., "Reasonable Effectiveness of Random Weighting: A
    Litmus Test for Multi-Task Learning", TMLR 2022)."""
    return Aggregation(tasks=tasks, aggregator=agg.Random(), name="rgw")
