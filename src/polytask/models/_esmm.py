"""Entire Space Multi-Task Model (ESMM) for the impression -> click -> conversion funnel.

Ma, Zhao, Huang, Zhu, He, Gai, "Entire Space Multi-Task Model: An Effective Approach for
Estimating Post-Click Conversion Rate", SIGIR 2018: ``pCTCVR = pCTR * pCVR``, trained with
``BCE(click, pCTR) + BCE(click AND conversion, pCTCVR)`` over all impressions; the CVR tower
has no loss of its own, and the embeddings are shared.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polytask.models._shared_bottom import SharedMLPNet
from polytask.models.base import Head, Representation, TowerParams
from polytask.nn import FeatureInput


class ESMMParams(TowerParams):
    ctr_task: str = Field(default="ctr", min_length=1)
    ctcvr_task: str = Field(default="ctcvr", min_length=1)
    cvr_output: str = Field(default="cvr", min_length=1)
    shared_units: list[int] = Field(default_factory=list)


def ctcvr_logit(ctr_logit: Tensor, cvr_logit: Tensor) -> Tensor:
    """``logit(sigmoid(a) * sigmoid(b))`` without overflow or cancellation, any ``a, b``.

    ``log p = logsigmoid(a) + logsigmoid(b)``; for ``log(1 - p)``, ``1 - p`` is written as
    ``sigmoid(-a) + sigmoid(a) * sigmoid(-b)`` (two non-negative terms) and summed with
    ``logaddexp``, so there is no ``1 - p`` to lose digits near ``p = 1`` and no ``log 0``:
    the result and its gradient are finite wherever ``a`` and ``b`` are.
    """
    log_p = F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)
    log_q = torch.logaddexp(
        F.logsigmoid(-ctr_logit), F.logsigmoid(ctr_logit) + F.logsigmoid(-cvr_logit)
    )
    return log_p - log_q


def check_esmm_heads(params: ESMMParams, heads: Sequence[Head]) -> None:
    """Raise ValueError unless ``ctr_task`` and ``ctcvr_task`` name two binary tasks,
    ``cvr_output`` names none, and no task takes ``inputs_from``."""
    by_name = {h.name: h for h in heads}
    for key in ("ctr_task", "ctcvr_task"):
        name = getattr(params, key)
        head = by_name.get(name)
        if head is None:
            raise ValueError(
                f"{key}: expected the name of a binary task, found {name!r}, which is not "
                f"among the tasks {sorted(by_name)}"
            )
        if head.type != "binary":
            raise ValueError(
                f"{key}: expected a binary task, found task {name!r} of type {head.type!r}"
            )
    if params.ctr_task == params.ctcvr_task:
        raise ValueError(
            f"ctr_task and ctcvr_task: expected two different tasks, found {params.ctr_task!r} "
            "for both"
        )
    if params.cvr_output in by_name:
        raise ValueError(
            f"cvr_output: expected a name that no task has (the CVR tower has no loss), found "
            f"{params.cvr_output!r}, which is a task"
        )
    linked = {h.name: list(h.inputs_from) for h in heads if h.inputs_from}
    if linked:
        raise ValueError(
            f"expected no inputs_from links (ESMM couples CTR and CVR through "
            f"pCTCVR = pCTR x pCVR), found {linked}"
        )


class ESMM(SharedMLPNet):
    """Entire Space Multi-Task Model (Ma et al., SIGIR 2018).

    ``input -> shared MLP (shared_units, default none: only the embeddings are shared)``,
    then a CTR tower and a CVR tower of ``tower_units``. The ``ctr_task``'s output is the
    CTR logit ``a``; the ``ctcvr_task``'s is ``logit(sigmoid(a) * sigmoid(b))`` with ``b``
    the CVR logit (`ctcvr_logit`), so the usual BCE-with-logits on it is the paper's BCE on
    pCTCVR, over every impression. The CVR tower's only gradient is through that product.
    pCVR is the auxiliary output ``cvr_output`` (`forward(..., auxiliary=True)`, a column
    of ``predict``). Any other task gets an ordinary tower on the shared representation.

    Parameter groups: ``input``, ``shared`` (with ``shared_units``), ``towers.<ctr_task>``,
    ``towers.<cvr_output>`` (the CVR tower) and ``towers.<task>`` for other tasks.
    """

    def __init__(self, *, inputs: FeatureInput, heads: Sequence[Head], params: ESMMParams) -> None:
        check_esmm_heads(params, heads)
        super().__init__(
            inputs=inputs, heads=heads, params=params, shared_units=params.shared_units
        )
        self.ctr_task = params.ctr_task
        self.ctcvr_task = params.ctcvr_task
        self.cvr_output = params.cvr_output
        # The tower built for the CTCVR task computes pCVR: name it for what it computes.
        self.towers = nn.ModuleDict(
            {
                (self.cvr_output if name == self.ctcvr_task else name): tower
                for name, tower in self.towers.items()
            }
        )
        self.auxiliary_outputs = {self.cvr_output: "binary"}

    def required_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        run = set(super().required_tasks(tasks))
        if self.ctcvr_task in run:
            run.add(self.ctr_task)  # pCTCVR = pCTR x pCVR
        return [n for n in self.order if n in run]

    def _run(
        self, batch: dict[str, Tensor], tasks: Sequence[str] | None, *, auxiliary: bool = False
    ) -> tuple[dict[str, Tensor], Representation]:
        run = self.required_tasks(tasks)
        # Every task but CTCVR has a tower of its own: the base runs those.
        outputs, rep = super()._run(batch, [n for n in run if n != self.ctcvr_task])
        if self.ctcvr_task in run or auxiliary:
            assert rep.shared is not None
            cvr = self.towers[self.cvr_output](rep.shared).squeeze(1)
            if self.ctcvr_task in run:
                outputs[self.ctcvr_task] = ctcvr_logit(outputs[self.ctr_task], cvr)
            if auxiliary:
                outputs[self.cvr_output] = cvr
        order = [*self.task_names, self.cvr_output]
        return {name: outputs[name] for name in order if name in outputs}, rep

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, {self.ctcvr_task} = {self.ctr_task} x {self.cvr_output} "
            f"({self.cvr_output}: auxiliary output, no loss)"
        )
