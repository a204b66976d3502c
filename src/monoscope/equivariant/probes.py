"""Probing SAE features on binary tasks, truncated to a few latents per task.

The paper's downstream test: for each binary task, keep only the ``t`` SAE latents most
related to the label (``t`` from ``truncation_lengths``, the paper's
``--probe-trunc-lengths``), fit a logistic regression and an XGBoost classifier on
them, and report the F1 score on a held-out split, averaged over tasks. Few latents
suffice only when single features carry the task's concept, which is what an
interpretable dictionary should offer.

Latent selection (on the training split only): each latent is scored by the absolute
Pearson correlation of its values with the label (``correlation``, the default; for a
binary label this is the point-biserial correlation, i.e. the class-mean difference
in units of the latent's standard deviation times a per-task constant), or by the
absolute difference of its class means (``mean_difference``, favouring large latents).
Latents constant on the training split score 0; ties go to the lower index.

Probes: ``logistic`` is scikit-learn's ``LogisticRegression`` (lbfgs, L2 with ``C``) on
latents standardised by the training split's statistics; ``xgboost`` is
``xgboost.XGBClassifier`` (``hist`` trees, ``n_jobs=1`` and a fixed seed, so runs
repeat). F1 is computed here (:func:`f1_binary`), with the positive class 1 and F1 = 0
when there are no true or predicted positives (scikit-learn's ``zero_division=0``).

Tasks whose training split holds one class only cannot be fitted and are skipped (and
logged); the split is over orbits (:func:`monoscope.equivariant.orbits.split_orbits`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
from tqdm import tqdm

from monoscope.config import RecordConfig, check_fields, one_of
from monoscope.logs import progress_kwargs

log = logging.getLogger(__name__)

PROBES = ("logistic", "xgboost")
SELECTIONS = ("correlation", "mean_difference")
RESULT_COLUMNS = ("family", "probe", "t", "task", "f1", "train_positives", "test_positives")


@dataclass(frozen=True)
class LogisticConfig:
    """scikit-learn's ``LogisticRegression``: inverse regularisation strength, iteration cap."""

    c: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        check_fields(self, ("c max_iter", "positive"), section="probes.logistic")


@dataclass(frozen=True)
class XGBoostConfig:
    """xgboost's ``XGBClassifier``: trees, their depth, the learning rate."""

    n_estimators: int = 50
    max_depth: int = 3
    learning_rate: float = 0.3

    def __post_init__(self) -> None:
        check_fields(
            self, ("n_estimators max_depth learning_rate", "positive"), section="probes.xgboost"
        )


@dataclass(frozen=True)
class TruncatedProbeConfig(RecordConfig):
    """Options of the truncated probes.

    Parameters
    ----------
    truncation_lengths : the numbers t of latents per task [--probe-trunc-lengths]; a t
        above the number of latents uses them all.
    probes : any of ``logistic``, ``xgboost``.
    selection : ``correlation`` or ``mean_difference`` (see the module docstring).
    logistic : the logistic regression (:class:`LogisticConfig`).
    xgboost : the boosted trees (:class:`XGBoostConfig`).
    seed : seeds the probes.
    """

    section: ClassVar[str] = "probes"

    truncation_lengths: tuple[int, ...] = (1, 4, 16, 64)
    probes: tuple[str, ...] = PROBES
    selection: str = "correlation"
    logistic: LogisticConfig = field(default_factory=LogisticConfig)
    xgboost: XGBoostConfig = field(default_factory=XGBoostConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "truncation_lengths", tuple(int(t) for t in self.truncation_lengths)
        )
        object.__setattr__(self, "probes", tuple(self.probes))
        if not self.truncation_lengths or min(self.truncation_lengths) < 1:
            raise ValueError(
                f"probes.truncation_lengths must be positive integers, got {list(self.truncation_lengths)}"
            )
        unknown = sorted(set(self.probes) - set(PROBES))
        if unknown or not self.probes:
            raise ValueError(f"probes.probes must be a non-empty subset of {PROBES}, got {unknown}")
        check_fields(self, ("selection", one_of(SELECTIONS)), ("seed", ">= 0"))


def f1_binary(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class: ``2 TP / (2 TP + FP + FN)``, 0 when that is 0/0."""
    truth = np.asarray(y_true).astype(bool).ravel()
    predicted = np.asarray(y_pred).astype(bool).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"label shapes differ: {truth.shape} vs {predicted.shape}")
    true_positive = int(np.sum(truth & predicted))
    false_positive = int(np.sum(~truth & predicted))
    false_negative = int(np.sum(truth & ~predicted))
    denominator = 2 * true_positive + false_positive + false_negative
    return 0.0 if denominator == 0 else 2 * true_positive / denominator


def latent_scores(
    features: np.ndarray, labels: np.ndarray, selection: str = "correlation"
) -> np.ndarray:
    """Per-latent relevance ``[K]`` to a binary label (see the module docstring)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got '{selection}'")
    if y.all() or not y.any():
        return np.zeros(x.shape[1])
    difference = x[y].mean(axis=0) - x[~y].mean(axis=0)
    if selection == "mean_difference":
        return np.abs(difference)
    centred = x - x.mean(axis=0)
    label = y.astype(np.float64) - y.mean()
    covariance = centred.T @ label
    scale = np.sqrt((centred**2).sum(axis=0) * (label**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.where(scale > 0, covariance / np.where(scale > 0, scale, 1.0), 0.0)
    return np.abs(correlation)


def select_latents(
    features: np.ndarray, labels: np.ndarray, t: int, selection: str = "correlation"
) -> np.ndarray:
    """Indices of the ``t`` highest-scoring latents (ties to the lower index)."""
    scores = latent_scores(features, labels, selection)
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[: min(t, len(order))])


def _fit_predict(
    probe: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    config: TruncatedProbeConfig,
) -> np.ndarray:
    if probe == "logistic":
        from sklearn.linear_model import LogisticRegression

        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        model = LogisticRegression(
            C=config.logistic.c, max_iter=config.logistic.max_iter, random_state=config.seed
        )
        model.fit((x_train - mean) / std, y_train)
        return model.predict((x_test - mean) / std)
    from xgboost import XGBClassifier

    model = XGBClassifier(
        n_estimators=config.xgboost.n_estimators,
        max_depth=config.xgboost.max_depth,
        learning_rate=config.xgboost.learning_rate,
        tree_method="hist",
        n_jobs=1,
        random_state=config.seed,
        verbosity=0,
    )
    model.fit(x_train, y_train)
    return model.predict(x_test)


def run_probes(
    features: np.ndarray,
    labels: np.ndarray,
    task_names: Sequence[str],
    test_mask: np.ndarray,
    config: TruncatedProbeConfig | None = None,
    family: str = "",
    progress: bool = True,
) -> pd.DataFrame:
    """Truncated probes of every task on features ``[N, K]`` (e.g. SAE codes, one row per
    image) with labels ``[N, T]`` (0/1) and a test mask ``[N]``.

    Returns
    -------
    A tidy frame with columns :data:`RESULT_COLUMNS`: one row per (probe, t, task);
    ``t`` is the requested truncation length; ``family`` is the given label.
    """
    config = config or TruncatedProbeConfig()
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels).astype(np.int64)
    test = np.asarray(test_mask, dtype=bool)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(test) != len(x):
        raise ValueError(
            f"features [N, K], labels [N, T] and test_mask [N] must agree, got "
            f"{list(x.shape)}, {list(y.shape)}, {list(test.shape)}"
        )
    if y.shape[1] != len(task_names):
        raise ValueError(f"{y.shape[1]} label columns but {len(task_names)} task names")
    if test.all() or not test.any():
        raise ValueError("test_mask must select some but not all rows")
    x_train, x_test = x[~test], x[test]
    rows = []
    skipped = []
    bar = tqdm(
        total=len(task_names),
        desc=f"probes {family}".strip(),
        unit="task",
        disable=not progress,
        **progress_kwargs(),
    )
    with bar:
        for column, task in enumerate(task_names):
            y_train, y_test = y[~test, column], y[test, column]
            bar.update(1)
            if y_train.min() == y_train.max():
                skipped.append(task)
                continue
            scores = latent_scores(x_train, y_train, config.selection)
            order = np.argsort(-scores, kind="stable")
            for t in config.truncation_lengths:
                chosen = np.sort(order[: min(t, len(order))])
                for probe in config.probes:
                    predicted = _fit_predict(
                        probe, x_train[:, chosen], y_train, x_test[:, chosen], config
                    )
                    rows.append(
                        {
                            "family": family,
                            "probe": probe,
                            "t": t,
                            "task": task,
                            "f1": f1_binary(y_test, predicted),
                            "train_positives": int(y_train.sum()),
                            "test_positives": int(y_test.sum()),
                        }
                    )
    if skipped:
        log.warning(
            "skipped %d task(s) with one class in the training split: %s", len(skipped), skipped
        )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def aggregate_probes(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count of F1 over tasks per (family, probe, t)."""
    grouped = results.groupby(["family", "probe", "t"], sort=True)["f1"]
    return grouped.agg(f1_mean="mean", f1_std="std", tasks="count").reset_index()
