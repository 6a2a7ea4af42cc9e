"""The base of every strict settings section (run file, model folder files)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors; values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
