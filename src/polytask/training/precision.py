"""``training.precision`` (bf16 autocast) and ``training.compile`` (torch.compile).

Both apply to the network *as trained*: `training_network` wraps the fitted network in a
`TrainNet` that runs its forward under ``torch.autocast(device_type, torch.bfloat16)`` and/or
through ``torch.compile``. Parameters, gradients and optimizer state stay float32 (autocast
only lowers the precision of the matmuls and their activations); the outputs are cast back to
float32 so task losses and metrics are computed in float32.

The wrapper keeps the network's interface: attribute access (``task_names``,
``parameter_groups()``...) is forwarded, and ``state_dict``/``load_state_dict`` are the
original module's (no ``_orig_mod.`` or ``net.`` prefix), so checkpoints and saved models are
the same whatever the settings. The estimator keeps the plain network as ``network_``:
``predict``/``evaluate``/``save`` after ``fit`` run it eagerly in float32.

A compile that fails (no C++ compiler for inductor, an unsupported op) is raised at the first
step as a `TrainingError` naming ``training.compile``, never as a bare dynamo traceback.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from polytask.errors import TrainingError
from polytask.models import MultiTaskNet
from polytask.training.settings import TrainingConfig


def autocast_context(
    precision: str, device: torch.device | str
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of context managers: autocast to bfloat16 for ``precision == "bf16"``, a
    no-op for ``"fp32"``. Works on CPU and CUDA (``device_type`` from ``device``)."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision != "bf16":
        raise ValueError(f"training.precision: expected 'fp32' or 'bf16', found {precision!r}")
    return functools.partial(
        torch.autocast, device_type=torch.device(device).type, dtype=torch.bfloat16
    )


class TrainNet(nn.Module):
    """The network as trained: autocast and/or compiled; see the module docstring."""

    def __init__(
        self, net: MultiTaskNet, *, precision: str = "fp32", compile: bool = False
    ) -> None:
        super().__init__()
        self.net = net
        self.precision = precision
        self.compiled = compile
        self._autocast = autocast_context(precision, next(net.parameters()).device)
        impl: Callable[..., dict[str, Tensor]] = net
        train_impl: Callable[..., tuple[dict[str, Tensor], dict[str, Tensor]]]
        train_impl = net.training_forward
        if compile:  # each compiled on its first call
            impl = cast(Callable[..., dict[str, Tensor]], torch.compile(net))
            train_impl = cast(Any, torch.compile(net.training_forward))
        # Not a submodule: the compiled wrapper shares the network's parameters.
        object.__setattr__(self, "_impl", impl)
        object.__setattr__(self, "_train_impl", train_impl)

    def forward(self, batch: Mapping[str, Tensor], *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        with self._autocast(), _compile_errors(self.compiled):
            out = self._impl(batch, *args, **kwargs)
        return self._float(out)

    def training_forward(
        self, batch: Mapping[str, Tensor], *args: Any, **kwargs: Any
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """`MultiTaskNet.training_forward` under the same autocast and compilation."""
        with self._autocast(), _compile_errors(self.compiled):
            out, terms = self._train_impl(batch, *args, **kwargs)
        return self._float(out), self._float(terms)

    def _float(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Outputs in float32 (autocast computes them in bfloat16)."""
        return tensors if self.precision == "fp32" else {k: v.float() for k, v in tensors.items()}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["net"], name)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        return self.net.load_state_dict(state_dict, *args, **kwargs)


@contextlib.contextmanager
def _compile_errors(compiled: bool) -> Iterator[None]:
    if not compiled:
        yield
        return
    try:
        yield
    except torch._dynamo.exc.TorchDynamoException as err:  # includes BackendCompilerFailed
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingError(
            f"training.compile: torch.compile failed on this machine ({type(err).__name__}: "
            f"{first}); set training.compile: false to train eagerly"
        ) from err


def training_network(net: MultiTaskNet, cfg: TrainingConfig) -> MultiTaskNet:
    """``net`` itself for fp32 eager training, else a `TrainNet` around it (typed as the
    network: it forwards every attribute)."""
    if cfg.precision == "fp32" and not cfg.compile:
        return net
    return cast(MultiTaskNet, TrainNet(net, precision=cfg.precision, compile=cfg.compile))
