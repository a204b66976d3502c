"""Building the library's typed configs from the workflow's (schema-validated) dicts."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


def from_mapping(
    cls: type[T], mapping: Mapping[str, Any], *, strict: bool = False, **overrides: Any
) -> T:
    """Instantiate the dataclass ``cls`` from the keys of ``mapping`` that it declares.

    This is the one way a config is built from plain data, whether a workflow section
    or a stored record. Fields whose type is itself a dataclass (an option group such
    as ``augment.jitter``) are built from their sub-mapping the same way, and lists
    become tuples so the configs stay hashable and immutable.

    Parameters
    ----------
    cls : the config dataclass.
    mapping : field values, possibly nested.
    strict : when false, keys ``cls`` does not declare are ignored: they belong to the
        workflow (shard counts, plot options), and the schema has already rejected
        unknown keys. When true (stored records), they are an error naming them.
    overrides : values set after the mapping's (not converted).
    """
    names = {field.name for field in dataclasses.fields(cls)}
    if strict:
        unknown = set(mapping) - names
        if unknown:
            section = getattr(cls, "section", cls.__name__)
            raise ValueError(f"unknown {section} config keys: {sorted(unknown)}")
    types = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        if key not in names:
            continue
        if dataclasses.is_dataclass(types[key]) and isinstance(value, Mapping):
            values[key] = from_mapping(types[key], value, strict=strict)
        else:
            values[key] = _freeze(value)
    values.update(overrides)
    return cls(**values)


class RecordConfig:
    """Mixin of the dataclass configs that are stored in files (checkpoints, metadata).

    ``to_dict`` gives a JSON-ready record (tuples as lists, nested dataclasses as dicts);
    ``from_dict`` rebuilds the config with :func:`from_mapping`, strict about unknown
    keys, which it names prefixed by ``section``.
    """

    section: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        return from_mapping(cls, record, strict=True)


@dataclasses.dataclass(frozen=True)
class Requirement:
    """What a config field must satisfy: ``text`` in the error, ``holds(value)`` the test."""

    text: str
    holds: Callable[[Any], bool]


# The requirements named in check_fields' rules by their text.
REQUIREMENTS = {
    requirement.text: requirement
    for requirement in (
        Requirement("positive", lambda value: value > 0),
        Requirement("positive or null", lambda value: value is None or value > 0),
        Requirement("positive and finite", lambda value: value > 0 and math.isfinite(value)),
        Requirement(">= 0", lambda value: value >= 0),
        Requirement(">= 0 and finite", lambda value: value >= 0 and math.isfinite(value)),
        Requirement("in [0, 1]", lambda value: 0 <= value <= 1),
    )
}


def one_of(choices: Collection[Any]) -> Requirement:
    """The value is one of ``choices`` (named as given in the error)."""
    return Requirement(f"one of {choices}", lambda value: value in choices)


def at_least(low: Any, why: str = "") -> Requirement:
    """The value is ``low`` or more; ``why`` is added to the error in brackets."""
    return Requirement(f"at least {low}" + (f" ({why})" if why else ""), lambda value: value >= low)


def in_range(low: Any, high: Any, closed: str = "[]") -> Requirement:
    """The value lies between ``low`` and ``high``; ``closed`` gives the interval's
    brackets (``"[]"``, ``"[)"``, ``"(]"`` or ``"()"``), as the error writes it."""
    opening, closing = closed

    def holds(value: Any) -> bool:
        above = value >= low if opening == "[" else value > low
        below = value <= high if closing == "]" else value < high
        return above and below

    return Requirement(f"in {opening}{low}, {high}{closing}", holds)


def check_fields(
    config: Any, *rules: tuple[str, str | Requirement], section: str | None = None
) -> None:
    """Check a config's fields against a table of rules; the first failure raises.

    Each rule is ``(names, requirement)``: space-separated field names and what each of
    them must satisfy, a :class:`Requirement` or the text of one of :data:`REQUIREMENTS`
    (``"positive"``, ``">= 0"``, ``"in [0, 1]"``, ...). The ValueError names
    ``<section>.<field>`` (``section`` defaults to the config's ``section``), the
    requirement and the value, e.g. ``augment.jitter.hue must be in [0, 0.5], got 0.7``.
    """
    section = section or config.section
    for names, requirement in rules:
        if isinstance(requirement, str):
            requirement = REQUIREMENTS[requirement]
        for name in names.split():
            value = getattr(config, name)
            if not requirement.holds(value):
                raise ValueError(f"{section}.{name} must be {requirement.text}, got {value!r}")


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value
