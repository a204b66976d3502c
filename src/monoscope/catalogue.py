"""One record per unit of every kind: references, labels and scores (the atlas's data).

The units are those of the units table (:func:`monoscope.evaluation.evaluate_units`):
every analysed neuron, the virtual neurons of every clustering method at every k, and
the alive features of every SAE. For each, from the embeddings of its references'
crops in one embedder's space (the evaluation's reference embedder):

* ``labels``: the ``top`` vocabulary entries nearest to its mean reference direction,
  with their cosine similarities; ``label_match``: whether the first is the majority
  ground-truth class of its references (``majority``, with ``purity`` its share);
* ``clarity``, ``polysemanticity``, ``redundancy`` of :mod:`monoscope.semantics`
  (redundancy counts the units of the same group: one kind, one k);
* ``similar``: the units nearest in meaning, other than its own family (a neuron and
  its virtual neurons share their references, so they would link to each other first).

Unit ids name the pages of the atlas: ``neurons-<layer>-<channel>``,
``<method>-k<k>-<layer>-<channel>-<cluster>``, ``sae-<name>-<layer>-<feature>`` and, for
the dimensions of a contrastive representation (:class:`ReferenceSet`: references from
its own data set), ``contrastive-<name>-<features>-<dimension>``.
A virtual neuron's references are positions (``slots``) in its neuron's references,
so the atlas cuts their images from the neuron's.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monoscope.evaluation import REDUNDANCY_THRESHOLD, EvaluationInputs
from monoscope.io import load_tensors, read_json, save_tensors, write_json
from monoscope.semantics import (
    clarity,
    label_units,
    mean_directions,
    most_similar_directions,
    polysemanticity,
    redundancy_of_directions,
)
from monoscope.units import kind_label
from monoscope.vocabulary import Vocabulary

SIMILAR_UNITS = 5


def _slug(text: str) -> str:
    """A file-name-safe form of a layer or kind name (``features.35`` -> ``features.35``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))


def neuron_id(layer: str, channel: int) -> str:
    """The unit id (atlas page name) of a neuron."""
    return f"{kind_label('neurons')}-{_slug(layer)}-{channel}"


def virtual_neuron_id(method: str, k: int, layer: str, channel: int, cluster: int) -> str:
    """The unit id of cluster ``cluster`` of a neuron's virtual neurons at ``k``."""
    return f"{_slug(kind_label('pure', method))}-k{k}-{_slug(layer)}-{channel}-{cluster}"


@dataclass
class _Unit:
    record: dict
    embeddings: torch.Tensor  # [R, D] of its references
    family: int  # units of one family share references (a neuron and its virtual neurons)
    truth: np.ndarray | None = None  # class indices of its references, when not in samples
    classes: Sequence[str] | None = None  # the names of those indices


@dataclass
class ReferenceSet:
    """Units whose references are not samples of the experiment's data set: the
    dimensions of a contrastive representation, with their top test images.

    ``units`` ``[U]`` are the unit indices (dimensions), ``positions`` ``[U, N]`` the
    references' positions in their own data set, ``labels`` ``[U, N]`` their classes
    (indices into ``classes``) and ``embeddings`` ``[U, N, D]`` in the catalogue's space.
    """

    kind: str
    layer: str
    units: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    embeddings: torch.Tensor
    classes: Sequence[str]


def _neuron_units(
    inputs: EvaluationInputs, space: str, ks: Sequence[int], layer: str
) -> list[_Unit]:
    circuits = inputs.circuits
    vectors = inputs.embeddings[space]["embeddings"]
    neurons = kind_label("neurons")
    units = []
    for row, channel in enumerate(circuits.channels.tolist()):
        base = neuron_id(layer, channel)
        count = circuits.sample_ids.shape[1]
        units.append(
            _Unit(
                {
                    "id": base,
                    "kind": neurons,
                    "group": neurons,
                    "layer": layer,
                    "neuron": channel,
                    "k": None,
                    "cluster": None,
                    "base": base,
                    "slots": list(range(count)),
                    "sample_ids": circuits.sample_ids[row].tolist(),
                    "crops": True,
                },
                vectors[row],
                row,
            )
        )
        for method, tensors in inputs.clusters.items():
            label = kind_label("pure", method)
            for k in ks:
                assignment = tensors[f"k{k}/labels"][row]
                for cluster in range(k):
                    slots = torch.nonzero(assignment == cluster).flatten()
                    if len(slots) == 0:  # k-means left a cluster empty: no unit
                        continue
                    units.append(
                        _Unit(
                            {
                                "id": virtual_neuron_id(method, k, layer, channel, cluster),
                                "kind": label,
                                "group": f"{label} k={k}",
                                "layer": layer,
                                "neuron": channel,
                                "k": k,
                                "cluster": cluster,
                                "base": base,
                                "slots": slots.tolist(),
                                "sample_ids": circuits.sample_ids[row, slots].tolist(),
                                "crops": True,
                            },
                            vectors[row, slots],
                            row,
                        )
                    )
    return units


def _sae_units(inputs: EvaluationInputs, first_family: int) -> list[_Unit]:
    units, family = [], first_family
    for sae in inputs.saes:
        tensors, layer = sae["embeddings"], sae["layer"]
        label = kind_label("sae", sae["name"])
        for row, feature in enumerate(tensors["channels"].tolist()):
            unit_id = f"sae-{_slug(sae['name'])}-{_slug(layer)}-{feature}"
            count = tensors["sample_ids"].shape[1]
            units.append(
                _Unit(
                    {
                        "id": unit_id,
                        "kind": label,
                        "group": label,
                        "layer": layer,
                        "neuron": None,
                        "feature": feature,
                        "k": None,
                        "cluster": None,
                        "base": unit_id,
                        "slots": list(range(count)),
                        "sample_ids": tensors["sample_ids"][row].tolist(),
                        "crops": True,
                    },
                    tensors["embeddings"][row],
                    family,
                )
            )
            family += 1
    return units


def _reference_set_units(sets: Sequence[ReferenceSet], first_family: int) -> list[_Unit]:
    units, family = [], first_family
    for reference_set in sets:
        for row, dimension in enumerate(reference_set.units.tolist()):
            unit_id = f"{_slug(reference_set.kind.replace(':', '-'))}-{_slug(reference_set.layer)}-{dimension}"
            count = reference_set.positions.shape[1]
            units.append(
                _Unit(
                    {
                        "id": unit_id,
                        "kind": reference_set.kind,
                        "group": reference_set.kind,
                        "layer": reference_set.layer,
                        "neuron": None,
                        "dimension": dimension,
                        "k": None,
                        "cluster": None,
                        "base": unit_id,
                        "slots": list(range(count)),
                        "sample_ids": reference_set.positions[row].tolist(),
                        "crops": False,  # whole images: no relevance crops or heatmaps
                    },
                    reference_set.embeddings[row],
                    family,
                    truth=reference_set.labels[row].numpy(),
                    classes=reference_set.classes,
                )
            )
            family += 1
    return units


def _majority(labels: np.ndarray) -> tuple[int, float]:
    """The most frequent label (ties: the smallest) and its share."""
    counts = Counter(labels.tolist())
    best = max(sorted(counts), key=lambda value: counts[value])
    return int(best), counts[best] / len(labels)


def build_catalogue(
    inputs: EvaluationInputs,
    space: str,
    vocabulary: Vocabulary,
    class_names: Sequence[str],
    ks: Sequence[int],
    layer: str,
    top: int = 3,
    similar: int = SIMILAR_UNITS,
    threshold: float = REDUNDANCY_THRESHOLD,
    reference_sets: Sequence[ReferenceSet] = (),
) -> tuple[list[dict], torch.Tensor]:
    """Every unit's record (module docs) and its mean reference direction ``[U, D]``.

    ``space`` names the embedder of ``inputs.embeddings`` (and of the SAEs' embeddings)
    that ``vocabulary`` lives in; ``class_names`` names the ground-truth labels; ``layer``
    is the neurons' layer (the circuits' upper layer). ``reference_sets`` adds units whose
    references lie in another data set (contrastive dimensions), with their own classes.
    """
    units = _neuron_units(inputs, space, ks, layer)
    units += _sae_units(inputs, first_family=len(inputs.circuits.channels))
    # Family numbers only need to differ between families: start past every unit so far.
    units += _reference_set_units(reference_sets, first_family=len(units))
    if not units:
        raise ValueError("no units to catalogue: no neuron has references and no SAE feature fired")
    dim = units[0].embeddings.shape[-1]
    if vocabulary.embeddings.shape[1] != dim:
        raise ValueError(
            f"the vocabulary has {vocabulary.embeddings.shape[1]}-d vectors but the '{space}' "
            f"embeddings are {dim}-d: build the vocabulary with the same embedder"
        )
    top = min(top, len(vocabulary.names))
    directions = torch.zeros((len(units), dim), dtype=torch.float64)
    for position, unit in enumerate(units):
        embedded = unit.embeddings[None]
        directions[position] = mean_directions(embedded)[0]
        indices, scores = label_units(embedded, vocabulary.embeddings, top)
        if unit.truth is None:
            truth = inputs.labels_of(torch.as_tensor(unit.record["sample_ids"]))
            names = class_names
        else:
            truth, names = unit.truth, unit.classes
        majority, share = _majority(np.asarray(truth))
        labels = [
            [vocabulary.names[i], round(float(score), 4)]
            for i, score in zip(indices[0].tolist(), scores[0].tolist(), strict=True)
        ]
        unit.record |= {
            "references": len(unit.record["sample_ids"]),
            "label": labels[0][0],
            "labels": labels,
            "majority": names[majority],
            "purity": round(share, 4),
            "label_match": labels[0][0] == names[majority],
            "clarity": (
                round(float(clarity(embedded)[0]), 4) if len(unit.embeddings) >= 2 else None
            ),
            "polysemanticity": round(float(polysemanticity(embedded, vocabulary.embeddings)[0]), 4),
        }
    groups: dict[tuple[str, str], list[int]] = {}
    for position, unit in enumerate(units):
        groups.setdefault((unit.record["group"], unit.record["layer"]), []).append(position)
    for members in groups.values():
        shared = redundancy_of_directions(directions[members], threshold)
        for position, count in zip(members, shared.tolist(), strict=True):
            units[position].record["redundancy"] = int(count)
    families = torch.tensor([unit.family for unit in units])
    nearest, scores = most_similar_directions(directions, similar, families)
    ids = [unit.record["id"] for unit in units]
    for unit, row, values in zip(units, nearest.tolist(), scores.tolist(), strict=True):
        unit.record["similar"] = [
            [ids[index], round(value, 4)]
            for index, value in zip(row, values, strict=True)
            if index >= 0
        ]
    return [unit.record for unit in units], directions.float()


def save_catalogue(
    path: str | os.PathLike,
    directions_path: str | os.PathLike,
    records: list[dict],
    directions: torch.Tensor,
    metadata: dict,
) -> None:
    """The records as JSON (with ``metadata``: the space, vocabulary, class names) and the
    directions as safetensors, rows in the records' order."""
    write_json(path, metadata | {"units": records})
    save_tensors(directions_path, {"directions": directions}, {"ids": [r["id"] for r in records]})


def load_catalogue(path: str | os.PathLike) -> dict:
    record = read_json(path)
    if not isinstance(record, dict) or "units" not in record:
        raise ValueError(f"{path} is not a unit catalogue: expected a JSON object with 'units'")
    return record


def load_directions(path: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    tensors, metadata = load_tensors(path)
    if "directions" not in tensors or "ids" not in metadata:
        raise ValueError(f"{path} is not a unit-directions file: expected 'directions' and 'ids'")
    return tensors["directions"], list(metadata["ids"])
