"""Building the library's typed configs from the workflow's (schema-validated) dicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], mapping: Mapping[str, Any], **overrides: Any) -> T:
    """Instantiate the dataclass ``cls`` from the keys of ``mapping`` that it declares.

    Keys the dataclass does not declare belong to the workflow (shard counts, plot
    options) and are ignored here; the schema has already rejected unknown keys.
    Lists become tuples so the configs stay hashable and immutable.
    """
    names = {field.name for field in dataclasses.fields(cls)}
    values = {key: _freeze(value) for key, value in mapping.items() if key in names}
    values.update(overrides)
    return cls(**values)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value
