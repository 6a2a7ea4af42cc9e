"""ESCM2: ESMM plus a counterfactual regulariser on the CVR tower, IPS or doubly robust.

Wang, Chang, Liu, Huang, Chen, Yu, Li, Chu, "ESCM2: Entire Space Counterfactual Multi-Task
Model for Post-Click Conversion Rate Estimation", SIGIR 2022. ESMM's CVR estimate stays biased
for unclicked impressions; ESCM2 adds the CVR risk over the whole impression space, estimated
from the clicked rows with the CTR tower's output ``o^ = pCTR`` as the propensity:

- IPS: ``R_IPS = 1/|D| sum_D o e / o^``,
- DR: ``R_DR = 1/|D| sum_D [e^ + o (e - e^) / o^]``, with an imputation tower ``e^(x)`` of
  the error, trained by ``R_IMP = 1/|D| sum_D o (e - e^)^2 / o^``,

where ``D`` is every impression, ``o`` the click, ``e = BCE(conversion, pCVR)`` (defined where
``o = 1``). The loss is ``L_CTR + lambda_c R + lambda_g L_CTCVR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from polytask.models._esmm import ESMM, ESMMParams, check_esmm_heads
from polytask.models.base import Head, Representation, tower
from polytask.nn import FeatureInput


class ESCM2Params(ESMMParams):
    counterfactual: Literal["ips", "dr"] = "dr"
    counterfactual_weight: float = Field(default=0.5, ge=0)
    max_inverse_propensity: float = Field(default=15.0, ge=1)
    imputation_output: str = Field(default="cvr_error", min_length=1)


def check_escm2_heads(params: ESCM2Params, heads: Sequence[Head]) -> None:
    """ESMM's checks (`check_esmm_heads`), and with DR an ``imputation_output`` that names
    no task and differs from ``cvr_output``."""
    check_esmm_heads(params, heads)
    if params.counterfactual == "dr":
        taken = [h.name for h in heads] + [params.cvr_output]
        if params.imputation_output in taken:
            raise ValueError(
                "imputation_output: expected a name that no task and not cvr_output has, "
                f"found {params.imputation_output!r}"
            )


def counterfactual_risk(
    ctr_logit: Tensor,
    cvr_logit: Tensor,
    click: Tensor,
    conversion: Tensor,
    *,
    form: str,
    max_inverse_propensity: float,
    imputed: Tensor | None = None,
) -> Tensor:
    """ESCM2's CVR risk over the impressions, the mean over rows whose click and conversion
    labels are both present (0 without any): IPS ``o e / o^`` or DR ``e^ + o (e - e^) / o^``
    plus the imputation loss ``o (e - e^)^2 / o^``.

    ``e = BCE(conversion, sigmoid(cvr_logit))``; ``o^ = sigmoid(ctr_logit)``, detached (the
    propensity weighs the CVR risk, it is not trained by it) and floored at
    ``1 / max_inverse_propensity``. In DR the CVR tower's gradient comes from the first part
    with ``e^`` fixed and the imputation's from the imputation loss with ``e`` fixed (joint
    learning of Wang et al., ICML 2019). ``conversion`` is read only where ``click`` is 1.
    """
    mask = ~(torch.isnan(click) | torch.isnan(conversion))
    o = torch.where(mask, click, 0.0)
    y = torch.where(mask & (o > 0), conversion, 0.0)
    inverse = 1.0 / torch.sigmoid(ctr_logit.detach()).clamp_min(1.0 / max_inverse_propensity)
    error = F.binary_cross_entropy_with_logits(cvr_logit, y, reduction="none")
    if form == "ips":
        per_row = o * error * inverse
    else:
        if imputed is None:
            raise ValueError("counterfactual 'dr' needs the imputed errors")
        per_row = imputed.detach() + o * (error - imputed.detach()) * inverse
        per_row = per_row + o * (error.detach() - imputed) ** 2 * inverse
    per_row = torch.where(mask, per_row, 0.0)
    return per_row.sum() / mask.sum().clamp(min=1)


class ESCM2(ESMM):
    """ESCM2 (Wang et al., SIGIR 2022): `ESMM` plus the counterfactual CVR risk.

    Everything ESMM has (CTR tower, CVR tower, ``ctcvr_task`` output ``pCTR x pCVR``, pCVR as
    the auxiliary output ``cvr_output``) and, added to the ``ctcvr_task``'s loss,
    ``counterfactual_weight`` times the CVR risk (`counterfactual_risk`): ``ips`` or ``dr``
    (default). The DR form adds an imputation tower (``tower_units`` on the shared
    representation) whose estimate of the CVR error is the auxiliary output
    ``imputation_output`` (a regression column of ``predict``). The propensity is the CTR
    tower's pCTR, detached, with ``1 / pCTR`` clipped at ``max_inverse_propensity``.
    Defaults from the authors' code (PaddleRec's escm2): ``counterfactual_weight`` 0.5
    (``lambda_c``), the clip at 15, DR. Their ``lambda_g`` (0.5) on the CTCVR loss is
    ``loss.weighting: weighted`` here; with the default sum it is 1.

    The risk is part of the ``ctcvr_task``'s loss: it trains the CVR tower, the imputation
    tower and the shared part in that task's steps; the CTR tower gets none of it.

    Parameter groups: ESMM's, plus ``towers.<imputation_output>`` with DR.
    """

    def __init__(self, *, inputs: FeatureInput, heads: Sequence[Head], params: ESCM2Params) -> None:
        check_escm2_heads(params, heads)
        super().__init__(inputs=inputs, heads=heads, params=params)
        self.form = params.counterfactual
        self.counterfactual_weight = params.counterfactual_weight
        self.max_inverse_propensity = params.max_inverse_propensity
        self.imputation_output = params.imputation_output
        if self.form == "dr":
            body_dim = params.shared_units[-1] if params.shared_units else inputs.out_dim
            self.towers[self.imputation_output] = tower(params, body_dim, 1)
            self.auxiliary_outputs = {
                self.cvr_output: "binary",
                self.imputation_output: "regression",
            }

    def _run(
        self, batch: dict[str, Tensor], tasks: Sequence[str] | None, *, auxiliary: bool = False
    ) -> tuple[dict[str, Tensor], Representation]:
        outputs, rep = super()._run(batch, tasks, auxiliary=auxiliary)
        if auxiliary and self.form == "dr":
            assert rep.shared is not None
            outputs[self.imputation_output] = self.towers[self.imputation_output](
                rep.shared
            ).squeeze(1)
        return outputs, rep

    def auxiliary_losses(
        self, outputs: dict[str, Tensor], labels: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        needed = (self.ctr_task, self.ctcvr_task, self.cvr_output)
        if self.counterfactual_weight == 0 or not all(n in outputs for n in needed):
            return {}
        if self.ctr_task not in labels or self.ctcvr_task not in labels:
            return {}
        risk = counterfactual_risk(
            outputs[self.ctr_task],
            outputs[self.cvr_output],
            labels[self.ctr_task],
            labels[self.ctcvr_task],
            form=self.form,
            max_inverse_propensity=self.max_inverse_propensity,
            imputed=outputs.get(self.imputation_output),
        )
        return {self.ctcvr_task: self.counterfactual_weight * risk}

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, counterfactual={self.form} "
            f"(weight {self.counterfactual_weight})"
        )
