"""The builders of what a fit trains: the network a model name means (sized by the fitted
preprocessor), the weighting a name means, and the optimizer and scheduler over both.

They take plain parts (a features section, task specs, a name and its parameters), so the
estimator, a saved model's loader and tests build the same things the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from polytask.data import Preprocessor
from polytask.data.features import FeaturesConfig
from polytask.errors import ConfigError, MissingExtraError
from polytask.models import MODELS, Head, MultiTaskNet
from polytask.nn import FeatureInput, ListInput
from polytask.nn.tokens import TokenInput
from polytask.tasks import TaskSpec
from polytask.training.checkpoint import TrainingParts
from polytask.training.optim import build_optimizer, build_scheduler
from polytask.training.settings import OptimizerConfig
from polytask.training.state import BatchSource
from polytask.weighting import WEIGHTINGS, Weighting


def build_network(
    features: FeaturesConfig,
    tasks: Mapping[str, TaskSpec],
    model: str,
    params: Mapping[str, Any],
    preprocessor: Preprocessor,
) -> MultiTaskNet:
    """The network ``model`` names with its ``params``, sized by the fitted preprocessor."""
    f = features
    inputs: FeatureInput | TokenInput
    if f.tokens is not None:  # sentences: word, shape and character embeddings per token
        inputs = TokenInput(
            cardinalities=preprocessor.cardinalities,
            embedding_dim=f.tokens.embedding_dim,
            shape_dim=f.tokens.shape_dim,
            char_filters=f.tokens.char_filters,
            char_dim=f.tokens.char_dim,
            char_width=f.tokens.char_width,
        )
    else:
        dims = [c.embedding_dim or f.embedding_dim for c in f.single]
        numeric_dim = f.numeric_dim or min(f.embedding_dim * max(len(f.numeric), 1), 128)
        sizes = preprocessor.list_cardinalities
        inputs = FeatureInput(
            cardinalities=preprocessor.cardinalities,
            embedding_dims=dims,
            numeric_width=preprocessor.numeric_width,
            numeric_dim=numeric_dim,
            names=[c.name for c in f.single],
            lists=[
                ListInput(
                    name=c.name,
                    dim=f.dim_of(c),
                    pooling=c.pool,
                    cardinality=sizes.get(c.name, 0),
                    shared_with=c.shared_with,
                    query=c.query,
                    attention_softmax=c.attention_softmax,
                    attention_units=tuple(c.attention_units),
                )
                for c in f.lists
            ],
        )
    heads = [
        Head(
            name=name,
            type=t.type,
            out_dim=preprocessor.num_classes(name),
            inputs_from=t.inputs_from,
            detach=t.detach,
            layer=t.layer,
        )
        for name, t in tasks.items()
    ]
    entry = MODELS[model]
    return entry.build(inputs=inputs, heads=heads, params=entry.params.model_validate(params))


def build_weighting(name: str, params: Mapping[str, Any], tasks: dict[str, TaskSpec]) -> Weighting:
    """The weighting ``name`` means with its ``params``; errors name the ``loss`` section."""
    entry = WEIGHTINGS[name]
    try:
        return entry.build(tasks=tasks, params=entry.params.model_validate(params))
    except MissingExtraError as err:
        raise MissingExtraError(f"loss: {err}") from None
    except ValueError as err:
        raise ConfigError(f"loss: {err}") from None


def training_parts(
    network: MultiTaskNet,
    weighting: Weighting,
    optimizer: OptimizerConfig,
    epochs: int,
    device: torch.device,
    source: BatchSource,
) -> TrainingParts:
    """What a fit trains (and a checkpoint saves): ``network`` and ``weighting`` moved to
    ``device``, an optimizer over both (the weighting's learned parameters as the group
    ``weighting``), the scheduler of ``epochs`` epochs, and the batch ``source``."""
    network, weighting = network.to(device), weighting.to(device)
    groups = network.parameter_groups()
    if any(True for _ in weighting.parameters()):
        groups["weighting"] = list(weighting.parameters())
    optim = build_optimizer(groups, optimizer)
    scheduler = build_scheduler(optim, optimizer, epochs)
    return TrainingParts(network, weighting, optim, scheduler, source)
