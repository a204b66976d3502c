"""A class-distance matrix from a config section: ``kind`` flat, tree or wordnet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monoscope.hierarchy._common import _listed
from monoscope.hierarchy.distances import flat_distances, tree_distances
from monoscope.hierarchy.wordnet import imagenet_distances, imagenet_wnids

DISTANCE_KINDS = ("flat", "tree", "wordnet")
"""Values of ``kind`` that :func:`load_distances` accepts."""

_SPEC_KEYS = {"flat": {"kind"}, "tree": {"kind", "parents"}, "wordnet": {"kind"}}


def _imagenet_indices(class_names: Sequence[str | int]) -> list[int]:
    """Row indices in :func:`imagenet_distances` of wnids or of class indices."""
    names = list(class_names)
    if all(isinstance(name, (int, np.integer)) for name in names):
        indices = [int(name) for name in names]
        bad = [index for index in indices if not 0 <= index < 1000]
        if bad:
            raise ValueError(f"ImageNet class indices must lie in [0, 1000): {_listed(bad)}")
        return indices
    if not all(isinstance(name, str) for name in names):
        raise ValueError("class_names must be all ImageNet wnids or all class indices")
    position = {wnid: index for index, wnid in enumerate(imagenet_wnids())}
    unknown = [name for name in names if name not in position]
    if unknown:
        raise ValueError(f"not ImageNet-1k wnids: {_listed(unknown)}")
    return [position[name] for name in names]


def load_distances(spec: Mapping[str, Any], class_names: Sequence[str | int]) -> np.ndarray:
    """Class-distance matrix described by a config entry.

    Parameters
    ----------
    spec : mapping with ``kind`` one of

        * ``{"kind": "flat"}``: :func:`flat_distances`;
        * ``{"kind": "tree", "parents": {child: parent}}``: :func:`tree_distances` with the
          class names as leaves;
        * ``{"kind": "wordnet"}``: the rows and columns of :func:`imagenet_distances` for the
          class names, which are ImageNet-1k wnids (any subset, any order) or class indices.
    class_names : the classes, in the order of the matrix rows.

    Returns
    -------
    numpy.ndarray ``[C, C]``, int64 (a fresh array)

    Raises
    ------
    ValueError
        For an unknown kind or key, duplicate class names, or classes the distances do not
        know.
    """
    kind = spec.get("kind")
    if kind not in DISTANCE_KINDS:
        raise ValueError(f"distance kind must be one of {DISTANCE_KINDS}, got {kind!r}")
    extra = set(spec) - _SPEC_KEYS[kind]
    if extra:
        raise ValueError(f"unexpected keys for distance kind {kind!r}: {sorted(extra)}")
    names = list(class_names)
    if len(set(names)) != len(names):
        raise ValueError("class_names must not repeat")
    if kind == "flat":
        return flat_distances(len(names))
    if kind == "tree":
        if "parents" not in spec:
            raise ValueError("distance kind 'tree' needs 'parents': {child: parent}")
        return tree_distances([str(name) for name in names], spec["parents"])
    indices = _imagenet_indices(names)
    return imagenet_distances()[np.ix_(indices, indices)]


def distances_from_config(
    options: Mapping[str, Any], class_names: Sequence[str | int]
) -> np.ndarray:
    """:func:`load_distances` from a config section (``kind``, and ``parents`` for a tree).

    Config sections carry every key with its default (``parents: {}`` for any kind) and
    keys of their own (``k``, ``max_samples``); only what the kind uses is passed on.
    """
    spec = {"kind": options["kind"]}
    if options["kind"] == "tree":
        spec["parents"] = options.get("parents", {})
    return load_distances(spec, class_names)
