"""Building the library's typed configs from the workflow's (schema-validated) dicts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

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


class RecordConfig:
    """Mixin of the dataclass configs that are stored in files (checkpoints, metadata).

    ``to_dict`` gives a JSON-ready record (tuples as lists, nested dataclasses as dicts);
    ``from_dict`` rebuilds the config and names unknown keys, prefixed by ``section``.
    """

    section: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        unknown = set(record) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.section} config keys: {sorted(unknown)}")
        return cls(**record)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value
