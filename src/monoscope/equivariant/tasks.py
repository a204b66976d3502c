"""Binary probe tasks derived from generating attributes (the paper's probe suite).

The paper probes SAE features on 180 binary tasks about the shapes. Here the task list
is generated from the data set's config, so it is the same for every split and run:

one-vs-rest     ``color=red``: one task per value of every categorical attribute
thresholds      ``size>4.8``: the continuous attributes above fixed fractions of their
                range (the config's range, not the data's quantiles)
conjunctions    ``shape=tee&color=red``: every pair of values of each listed pair of
                categorical attributes

A task is a conjunction of conditions ``(attribute, op, value)`` with op ``eq`` (the
categorical index equals value) or ``gt`` (the continuous value exceeds it). A task is
*invariant* when it reads only :data:`~monoscope.equivariant.shapes.INVARIANT_ATTRIBUTES`:
its label is the same for every member of an orbit. Tasks on position or orientation
change label under rotation, which is what an SAE with rotation-invariant codes cannot
follow; the ``invariant`` flag lets an analysis report the two kinds apart.

Labels come as a ``[N, T]`` uint8 matrix (:func:`task_labels`) aligned with the images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from monoscope.config import RecordConfig
from monoscope.equivariant.shapes import (
    CATEGORICAL_ATTRIBUTES,
    CONTINUOUS_ATTRIBUTES,
    INVARIANT_ATTRIBUTES,
    ShapesConfig,
)

OPS = ("eq", "gt")
DEFAULT_CONJUNCTIONS = (
    ("shape", "color"),
    ("shape", "background"),
    ("shape", "orientation"),
    ("color", "background"),
    ("color", "orientation"),
)


@dataclass(frozen=True)
class ProbeTask:
    """One binary task: the conjunction of ``conditions``.

    ``conditions`` holds ``(attribute, op, value)`` triples; ``invariant`` says whether
    the label is constant over orbits.
    """

    name: str
    conditions: tuple[tuple[str, str, float], ...]
    invariant: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "conditions": [list(c) for c in self.conditions],
            "invariant": self.invariant,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ProbeTask:
        return cls(
            name=str(record["name"]),
            conditions=tuple(tuple(c) for c in record["conditions"]),  # type: ignore[misc]
            invariant=bool(record["invariant"]),
        )


@dataclass(frozen=True)
class TaskConfig(RecordConfig):
    """Which tasks to derive.

    Parameters
    ----------
    one_vs_rest : one task per value of each categorical attribute.
    thresholds : fractions q in (0, 1): a task ``attr > low + q (high - low)`` per
        continuous attribute (its range from the shapes config).
    conjunctions : pairs of categorical attributes; a task per pair of values.
    invariant_only : keep only rotation-invariant tasks.
    """

    section: ClassVar[str] = "tasks"

    one_vs_rest: bool = True
    thresholds: tuple[float, ...] = (0.25, 0.5, 0.75)
    conjunctions: tuple[tuple[str, str], ...] = DEFAULT_CONJUNCTIONS
    invariant_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(q) for q in self.thresholds))
        object.__setattr__(self, "conjunctions", tuple(tuple(p) for p in self.conjunctions))
        if any(not 0.0 < q < 1.0 for q in self.thresholds):
            raise ValueError(f"tasks.thresholds must lie in (0, 1), got {list(self.thresholds)}")
        for pair in self.conjunctions:
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(CATEGORICAL_ATTRIBUTES):
                raise ValueError(
                    "tasks.conjunctions must be pairs of two different attributes from "
                    f"{CATEGORICAL_ATTRIBUTES}, got {list(pair)}"
                )


def _invariant(conditions: Sequence[tuple[str, str, float]]) -> bool:
    return all(attribute in INVARIANT_ATTRIBUTES for attribute, _, _ in conditions)


def shape_tasks(shapes: ShapesConfig, config: TaskConfig | None = None) -> list[ProbeTask]:
    """The task list for data sets generated with ``shapes`` (see the module docstring)."""
    config = config or TaskConfig()
    names = shapes.category_names()
    ranges = {
        "size": shapes.size_range,
        "x": shapes.position_range,
        "y": shapes.position_range,
    }
    tasks: list[ProbeTask] = []

    def add(name: str, conditions: tuple[tuple[str, str, float], ...]) -> None:
        tasks.append(ProbeTask(name, conditions, _invariant(conditions)))

    if config.one_vs_rest:
        for attribute in CATEGORICAL_ATTRIBUTES:
            for index, value in enumerate(names[attribute]):
                add(f"{attribute}={value}", ((attribute, "eq", index),))
    for attribute in CONTINUOUS_ATTRIBUTES:
        low, high = ranges[attribute]
        for q in config.thresholds:
            threshold = low + q * (high - low)
            add(f"{attribute}>{threshold:.4g}", ((attribute, "gt", threshold),))
    for first, second in config.conjunctions:
        for i, a in enumerate(names[first]):
            for j, b in enumerate(names[second]):
                add(f"{first}={a}&{second}={b}", ((first, "eq", i), (second, "eq", j)))
    if config.invariant_only:
        tasks = [task for task in tasks if task.invariant]
    return tasks


def task_labels(
    attributes: Mapping[str, np.ndarray], tasks: Sequence[ProbeTask]
) -> tuple[np.ndarray, list[str]]:
    """The ``[N, T]`` uint8 label matrix of ``tasks`` on attribute records, and task names."""
    count = len(next(iter(attributes.values())))
    labels = np.ones((count, len(tasks)), dtype=bool)
    for column, task in enumerate(tasks):
        for attribute, op, value in task.conditions:
            if attribute not in attributes:
                raise ValueError(f"task {task.name!r} reads unknown attribute {attribute!r}")
            if op not in OPS:
                raise ValueError(f"task {task.name!r}: op must be one of {OPS}, got {op!r}")
            column_values = np.asarray(attributes[attribute])
            labels[:, column] &= column_values == value if op == "eq" else column_values > value
    return labels.astype(np.uint8), [task.name for task in tasks]
