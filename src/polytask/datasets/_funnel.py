"""A synthetic impression -> click -> conversion funnel with selection bias, for ESMM.

Ma, Zhao, Huang, Zhu, He, Gai, "Entire Space Multi-Task Model: An Effective Approach for
Estimating Post-Click Conversion Rate", SIGIR 2018.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from polytask.datasets._synthetic import _check_int, _check_real

_NUM_USER_GROUPS = 20
_NUM_ITEM_CATS = 30
_NUM_POSITIONS = 5
# The effect tables (the "world") are drawn from this fixed seed, not from the caller's, so that
# frames drawn with different seeds come from the same funnel (train and test sets, say).
_WORLD_SEED = 20180708

_CLICK_INTERCEPT = -3.2
_CONV_INTERCEPT = -3.0
# Slot 1 is seen most: the click logit falls with the position; conversion does not depend on it.
_POSITION_CLICK = np.array([0.0, -0.6, -1.1, -1.5, -1.8])
_MEDIAN_PRICE = 30.0  # currency units
_LOG_PRICE_STD = 0.7


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _world() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-category logit effects ``user_click, user_conv, cat_click, cat_conv``: user groups
    partly shared, item categories partly opposite."""
    rng = np.random.default_rng(_WORLD_SEED)
    user_click = rng.normal(0.0, 0.4, _NUM_USER_GROUPS)
    user_conv = 0.6 * user_click + rng.normal(0.0, 0.3, _NUM_USER_GROUPS)
    cat_click = rng.normal(0.0, 0.5, _NUM_ITEM_CATS)
    # "Clickbait": categories that attract clicks convert worse, and the other way round.
    cat_conv = -0.7 * cat_click + rng.normal(0.0, 0.3, _NUM_ITEM_CATS)
    return user_click, user_conv, cat_click, cat_conv


def funnel_synthetic(n_samples: int, *, selection_bias: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Ad impressions with clicks and conversions, where clicked rows are a biased sample.

    Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click
    Conversion Rate", SIGIR 2018: conversions are only observed after a click, so a CVR model
    trained on clicked impressions only sees a biased sample of the space it is used on (all
    impressions). This generator makes that bias explicit and measurable, because it also returns
    the latent conversion intent of every impression.

    Generative process, for each impression independently:

    1. Features: ``user_group`` uniform over 20 groups (``"u00"`` .. ``"u19"``), ``item_cat``
       uniform over 30 categories (``"c00"`` .. ``"c29"``), ``position`` uniform over the slots
       ``"1"`` .. ``"5"``; ``user_activity ~ N(0, 1)`` (a standardised score),
       ``price = 30 * exp(0.7 * z_price)`` with ``z_price ~ N(0, 1)`` (currency units),
       ``item_quality ~ Beta(4, 2)`` (a score in [0, 1]).
    2. A latent shopping intent ``h ~ N(0, 1)``, not among the columns.
    3. Click logit ``-3.2 + position_effect[position] + 1.5 * user_activity + 0.3 * z_price
       + 0.2 * item_quality + user_click[user_group] + cat_click[item_cat]
       + 2.0 * selection_bias * h``, with ``position_effect = (0, -0.6, -1.1, -1.5, -1.8)``.
    4. Conversion logit ``-3.0 - 0.9 * z_price + 2.5 * (item_quality - 2/3)
       + user_conv[user_group] + cat_conv[item_cat] + 1.5 * selection_bias * h``.
    5. ``click ~ Bernoulli(sigmoid(click logit))``, ``cvr_true = sigmoid(conversion logit)``,
       ``conversion_intent ~ Bernoulli(cvr_true)`` independently of the click given the
       features and ``h``, and ``conversion = click * conversion_intent``.

    So position and activity drive clicks but not conversions; price and quality drive
    conversions (price with the opposite sign); the user-group effects are partly shared
    (``user_conv = 0.6 * user_click + N(0, 0.3^2)``) and the item-category effects partly
    opposite (``cat_conv = -0.7 * cat_click + N(0, 0.3^2)``, clickbait categories), both tables
    drawn once from a fixed seed, so every ``seed`` samples the same funnel. The bias has two
    sources: the clicked rows have another feature distribution than all impressions, and,
    through ``h`` (which no feature explains), they convert more than impressions with the same
    features that were not clicked. ``selection_bias = 0`` removes the second source.

    With the default settings the click-through rate is about 10%, the conversion rate among
    clicked rows about 25% and the conversion intent over all impressions about 11%. On 100,000
    impressions, a logistic regression on the one-hot and numeric features fitted to the clicked
    rows ranks ``conversion_intent`` over all impressions with an AUC about 0.02 lower than the
    same model fitted to ``conversion_intent`` on all rows (about 0.71 against 0.73; ``cvr_true``
    itself reaches about 0.87).

    Args:
        n_samples: number of impressions, at least 1.
        selection_bias: weight of the latent intent ``h`` in both logits, at least 0.
        seed: seed of ``numpy.random.default_rng`` for the impressions; the same seed gives the
            same frame.

    Returns:
        A frame of ``n_samples`` rows. Features: ``user_group``, ``item_cat``, ``position``
        (strings), ``user_activity``, ``price``, ``item_quality`` (float64). Labels: ``click``,
        ``conversion`` (observed; 1 only where ``click`` is 1) and ``conversion_intent`` (would
        convert if clicked; observable in synthetic data only), all int64 0/1; and ``cvr_true``
        (float64, the probability behind ``conversion_intent``, which depends on ``h`` and so is
        an oracle no model of the features can match). Give a model only the feature columns:
        ``conversion_intent`` and ``cvr_true`` are for evaluating CVR over all impressions.

    Raises:
        DataError: ``n_samples`` is below 1, ``selection_bias`` below 0, or ``seed`` negative.
    """
    func = "funnel_synthetic"
    n = _check_int(func, "n_samples", n_samples, minimum=1)
    bias = _check_real(
        func, "selection_bias", selection_bias, low=0.0, expected="a finite number >= 0"
    )
    seed = _check_int(func, "seed", seed, minimum=0)

    user_click, user_conv, cat_click, cat_conv = _world()
    rng = np.random.default_rng(seed)
    user = rng.integers(0, _NUM_USER_GROUPS, n)
    cat = rng.integers(0, _NUM_ITEM_CATS, n)
    position = rng.integers(0, _NUM_POSITIONS, n)
    activity = rng.standard_normal(n)
    z_price = rng.standard_normal(n)
    price = _MEDIAN_PRICE * np.exp(_LOG_PRICE_STD * z_price)
    quality = rng.beta(4.0, 2.0, n)
    latent = rng.standard_normal(n)  # h

    click_logit = (
        _CLICK_INTERCEPT
        + _POSITION_CLICK[position]
        + 1.5 * activity
        + 0.3 * z_price
        + 0.2 * quality
        + user_click[user]
        + cat_click[cat]
        + 2.0 * bias * latent
    )
    conv_logit = (
        _CONV_INTERCEPT
        - 0.9 * z_price
        + 2.5 * (quality - 2.0 / 3.0)
        + user_conv[user]
        + cat_conv[cat]
        + 1.5 * bias * latent
    )
    click = (rng.random(n) < _sigmoid(click_logit)).astype(np.int64)
    cvr_true = _sigmoid(conv_logit)
    conversion_intent = (rng.random(n) < cvr_true).astype(np.int64)

    return pd.DataFrame(
        {
            "user_group": np.char.mod("u%02d", user).astype(str),
            "item_cat": np.char.mod("c%02d", cat).astype(str),
            "position": (position + 1).astype(str),
            "user_activity": activity,
            "price": price,
            "item_quality": quality,
            "click": click,
            "conversion": click * conversion_intent,
            "conversion_intent": conversion_intent,
            "cvr_true": cvr_true,
        }
    )


def funnel_requests(
    n_samples: int, *, per_request: int = 10, selection_bias: float = 1.0, seed: int = 0
) -> pd.DataFrame:
    """`funnel_synthetic` impressions grouped into requests, with order values: the table of
    the decision example (examples/funnel_decision.yaml, docs/decisions.md).

    Every ``per_request`` consecutive impressions form one request (``request``, an int, the
    group a feed or auction ranks), and a purchase (``conversion`` = 1) has an
    ``order_value``: the item's ``price`` times a log-normal basket factor exp(N(0, 0.25^2))
    (NaN where there was no purchase). So ``P(conversion) x E[order_value]`` is the expected
    revenue of an impression, and ``revenue`` (``order_value`` where purchased, else 0) is the
    realised one, for evaluating rankings by revenue.
    """
    per = _check_int("funnel_requests", "per_request", per_request, minimum=1)
    frame = funnel_synthetic(n_samples, selection_bias=selection_bias, seed=seed)
    rng = np.random.default_rng([seed, 1])  # another stream than the impressions'
    basket = rng.lognormal(0.0, 0.25, len(frame))
    frame.insert(0, "request", np.arange(len(frame)) // per)
    bought = frame["conversion"].to_numpy() == 1
    frame["order_value"] = np.where(bought, frame["price"].to_numpy() * basket, np.nan)
    frame["revenue"] = np.where(bought, frame["order_value"].to_numpy(), 0.0)
    return frame
