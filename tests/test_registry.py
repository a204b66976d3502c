"""The one registry mechanism: registration, lookup errors, the mapping view."""

import pytest

from monoscope.registry import Registry, UnknownNameError


def test_register_add_and_lookup():
    parts = Registry("toy part")

    @parts.register("a")
    class A:
        pass

    parts.add("b", len)
    assert parts["a"] is A and parts.get_entry("b") is len
    assert parts.names() == ("a", "b") and sorted(parts) == ["a", "b"] and len(parts) == 2
    assert "a" in parts and "c" not in parts and parts.get("c") is None
    parts.add("a", A)  # the same object again is a no-op


def test_unknown_and_duplicate_names_are_clear_errors():
    parts = Registry("toy part")
    parts.add("a", 1)
    with pytest.raises(ValueError, match=r"unknown toy part 'x'; known: \['a'\]"):
        parts["x"]
    with pytest.raises(KeyError):
        parts.get_entry("x")
    assert str(UnknownNameError("plain")) == "plain"
    with pytest.raises(ValueError, match="already registered"):
        parts.add("a", 2)
    with pytest.raises(ValueError, match="non-empty name"):
        parts.add("", 3)
