"""PURE's evaluation (stages 6 and 7) from the workflow's files, and its tables and figures.

The formulas live in :mod:`monoscope.pure.metrics`; this module gathers the inputs (cluster
labels per method and k, embeddings of the crops, circuits, ground-truth labels of the
references) and lays the results out as the paper does: methods as rows, k as columns,
mean and standard error over neurons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from monoscope.data import read_sample_table
from monoscope.io import load_tensors
from monoscope.pure.circuits import Circuits, load_circuits
from monoscope.pure.metrics import (
    alignment_scores,
    distance_summary,
    mean_and_standard_error,
    purity_summary,
    summarize_alignment,
)
from monoscope.semantics import clarity, mean_directions, redundancy_of_directions
from monoscope.tables import format_mean_se, write_table
from monoscope.units import kind_label


def reference_labels(samples_path, sample_ids: torch.Tensor) -> np.ndarray:
    """Ground-truth class of every reference, ``[C, N]``."""
    return _labels_of(_label_lookup(samples_path), sample_ids)


def _label_lookup(samples_path) -> pd.Series:
    table = read_sample_table(samples_path)
    return pd.Series(table["label"].to_numpy(), index=table["sample_id"].to_numpy())


def _labels_of(lookup: pd.Series, sample_ids: torch.Tensor) -> np.ndarray:
    return lookup.loc[sample_ids.numpy().reshape(-1)].to_numpy().reshape(sample_ids.shape)


@dataclass
class EvaluationInputs:
    """Everything the evaluation reads, each file loaded once (:func:`load_evaluation_inputs`).

    ``circuits``: the merged circuits (their references are the neurons' references);
    ``labels``: ground truth per sample id; ``clusters``: the tensors of each clustering
    method; ``embeddings``: those of each embedder's crops of the neurons' references;
    ``saes``: per SAE its ``name``, ``layer`` and the ``embeddings`` tensors of its
    features' crops (reference embedder).
    """

    circuits: Circuits
    labels: pd.Series
    clusters: dict[str, dict[str, torch.Tensor]]
    embeddings: dict[str, dict[str, torch.Tensor]]
    saes: list[dict] = field(default_factory=list)

    def labels_of(self, sample_ids: torch.Tensor) -> np.ndarray:
        """Ground-truth class of every reference, shaped as ``sample_ids``."""
        return _labels_of(self.labels, sample_ids)


def load_evaluation_inputs(
    clusters: Mapping[str, str | Path],
    embeddings: Mapping[str, str | Path],
    circuits: str | Path,
    samples: str | Path,
    saes: Sequence[dict] = (),
) -> EvaluationInputs:
    """Load every input of :func:`evaluate` once.

    ``clusters`` maps clustering methods to their files, ``embeddings`` embedder names
    to theirs; ``saes`` holds, per SAE, its ``name``, ``layer`` and the path of its
    ``embeddings`` (reference embedder).
    """
    circuit_data, _ = load_circuits(circuits)
    vectors = {name: load_tensors(path)[0] for name, path in embeddings.items()}
    for name, tensors in vectors.items():
        if not torch.equal(tensors["sample_ids"], circuit_data.sample_ids):
            raise ValueError(
                f"embeddings of {name} are of other references than the circuits; rerun them"
            )
    return EvaluationInputs(
        circuits=circuit_data,
        labels=_label_lookup(samples),
        clusters={method: load_tensors(path)[0] for method, path in clusters.items()},
        embeddings=vectors,
        saes=[
            {
                "name": sae["name"],
                "layer": sae["layer"],
                "embeddings": load_tensors(sae["embeddings"])[0],
            }
            for sae in saes
        ],
    )


def evaluate(
    inputs: EvaluationInputs,
    ks: Sequence[int],
    reference: str,
    alignment: Mapping[str, int],
    hierarchy_k: int,
    hierarchy: dict,
    catalogue: Sequence[dict] | None = None,
) -> dict:
    """All scores of one experiment as a JSON-ready record: PURE's (distances, alignment,
    purity per method and k; :func:`evaluate_pure`) and, under ``units``, one row per
    kind of unit (:func:`evaluate_units`, with the labels of ``catalogue``)."""
    results = evaluate_pure(inputs, ks, reference, alignment)
    results["units"] = evaluate_units(inputs, reference, hierarchy_k, hierarchy, catalogue)
    return results


def evaluate_pure(
    inputs: EvaluationInputs,
    ks: Sequence[int],
    reference: str,
    alignment: Mapping[str, int],
) -> dict:
    """PURE's scores: distances and purity of every clustering method and k, alignment
    of every space with ``reference`` (the embedder whose distances score the methods)."""
    circuit_data, vectors = inputs.circuits, inputs.embeddings
    sample_ids = circuit_data.sample_ids
    reference_vectors = vectors[reference]["embeddings"].numpy()
    labels = inputs.labels_of(sample_ids)
    channels = len(sample_ids)

    distances, purity = [], []
    neuron_purity = purity_summary(labels, None)
    purity.append(
        {
            "method": kind_label("neurons"),
            "k": 1,
            "mean": neuron_purity[0],
            "se": neuron_purity[1],
            "units": neuron_purity[2],
        }
    )
    for method, tensors in inputs.clusters.items():
        for k in ks:
            assignment = tensors[f"k{k}/labels"].numpy()
            summary = distance_summary(reference_vectors, assignment)
            distances.append(
                {
                    "method": method,
                    "k": k,
                    "intra": list(summary["intra"]),
                    "inter": list(summary["inter"]),
                }
            )
            mean, se, units = purity_summary(labels, assignment)
            purity.append({"method": method, "k": k, "mean": mean, "se": se, "units": units})
    random = distance_summary(reference_vectors, np.zeros(sample_ids.shape, dtype=np.int64))[
        "random"
    ]
    stability = [
        {
            "method": method,
            "k": k,
            "channels": tensors["channels"].tolist(),
            "ari": tensors[f"k{k}/stability"].tolist(),
        }
        for method, tensors in inputs.clusters.items()
        for k in ks
        if f"k{k}/stability" in tensors
    ]

    spaces = {name: tensors["embeddings"].numpy() for name, tensors in vectors.items()}
    spaces["circuits (PURE)"] = circuit_data.circuits.numpy()
    spaces["activations"] = circuit_data.activations.numpy()
    aligned = summarize_alignment(
        alignment_scores(
            spaces,
            reference=reference,
            subsets=alignment["subsets"],
            references_per_neuron=alignment["references"],
            seed=alignment["seed"],
        )
    )
    return {
        "reference": reference,
        "neurons": channels,
        "references_per_neuron": int(sample_ids.shape[1]),
        "random": list(random),
        "distances": distances,
        "alignment": {
            space: {key: list(value) for key, value in scores.items()}
            for space, scores in aligned.items()
        },
        "purity": purity,
        "stability": stability,
    }


PURE_TABLES = ("semantic_distances", "alignment", "purity", "stability")
UNIT_TABLES = ("units", "sae")
CATALOGUE_TABLES = ("labels",)  # from the catalogue (monoscope.catalogue): write_labels_table


def write_pure_tables(
    results: dict, stems: Mapping[str, str | Path], experiment: str
) -> list[Path]:
    """The tables of :data:`PURE_TABLES` as CSV, Markdown and LaTeX, each at its path stem
    in ``stems`` (:func:`monoscope.tables.write_table`); ``stability`` only when ``stems``
    names it."""
    reference = results["reference"]
    written = []

    ks = sorted({row["k"] for row in results["distances"]})
    frame = pd.DataFrame(
        {
            f"k={k} {which}": {
                row["method"]: format_mean_se(*row[which])
                for row in results["distances"]
                if row["k"] == k
            }
            for k in ks
            for which in ("intra", "inter")
        }
    )
    frame.loc["random pairs"] = format_mean_se(*results["random"])
    frame.index.name = "method"
    written += write_table(
        frame,
        stems["semantic_distances"],
        f"{experiment}: Euclidean distances between {reference} embeddings of the cropped "
        "references, within virtual neurons (intra) and between them (inter), mean and "
        f"standard error over {results['neurons']} neurons.",
        label="tab:semantic-distances",
    )

    frame = pd.DataFrame(
        {
            measure: {
                space: format_mean_se(*scores[measure])
                for space, scores in results["alignment"].items()
            }
            for measure in ("pearson", "spearman", "dcor")
        }
    )
    frame.index.name = "space"
    written += write_table(
        frame,
        stems["alignment"],
        f"{experiment}: correlation of pairwise distances in each space with {reference} "
        "distances (pooled over random disjoint subsets of neurons; mean and standard error "
        "over the subsets). dcor is Szekely's distance correlation.",
        label="tab:alignment",
    )

    rows = {}
    for row in results["purity"]:
        neurons = row["method"] == kind_label("neurons")
        name = f"{row['method']} (unsplit)" if neurons else row["method"]
        rows.setdefault(name, {})
        columns = ks if neurons else [row["k"]]
        for k in columns:
            rows[name][f"k={k}"] = format_mean_se(row["mean"], row["se"])
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "units"
    written += write_table(
        frame,
        stems["purity"],
        f"{experiment}: ground-truth purity, the share of a unit's references that carry its "
        "most common label, mean and standard error over units (neurons, or the virtual "
        "neurons of each method and k).",
        label="tab:purity",
    )
    if "stability" in stems:
        written += write_stability_table(results, stems["stability"], experiment)
    return written


def write_stability_table(results: dict, stem: str | Path, experiment: str) -> list[Path]:
    """Per neuron, the mean adjusted Rand index of its k-means clustering with reruns
    under other seeds, for every method and k; the last row is the mean over neurons."""
    if not results["stability"]:
        raise ValueError(
            "no clustering has stability scores: set clustering.stability_seeds above 0"
        )
    columns = {}
    for row in results["stability"]:
        columns[f"{row['method']} k={row['k']}"] = dict(
            zip(row["channels"], row["ari"], strict=True)
        )
    frame = pd.DataFrame(columns)
    summary = {
        name: format_mean_se(*mean_and_standard_error(values.to_numpy()))
        for name, values in frame.items()
    }
    frame = frame.apply(lambda column: column.map(lambda value: format_mean_se(value, None)))
    frame.index = [str(channel) for channel in frame.index]
    frame.loc["mean over neurons"] = summary
    frame.index.name = "neuron"
    return write_table(
        frame,
        stem,
        f"{experiment}: stability of each neuron's virtual neurons across k-means seeds, the "
        "mean adjusted Rand index between the kept clustering and reruns with other seeds "
        "(1: the same split every time; about 0: no more agreement than chance).",
        label="tab:stability",
    )


def evaluate_units(
    inputs: EvaluationInputs,
    reference: str,
    k: int,
    hierarchy: dict,
    catalogue: Sequence[dict] | None = None,
) -> list[dict]:
    """One row per kind of unit (:data:`monoscope.units.UNIT_KINDS`): neurons, virtual
    neurons of every clustering method at ``k``, and the alive features of every SAE,
    scored alike.

    Columns: the number of units, ground-truth purity and the mean distance between the
    ``reference`` embeddings of a unit's references (within-unit distance), the clarity
    and redundancy of :mod:`monoscope.semantics` in the same embeddings (redundancy among
    the units of the row, at cosine ``REDUNDANCY_THRESHOLD``), and the hierarchy score
    where ``hierarchy`` (the ``score_hierarchy`` record, units named by
    :func:`monoscope.units.kind_label`) has it; each as mean and standard error over
    units. With the unit records of ``catalogue`` (:mod:`monoscope.catalogue`), also their
    polysemanticity and the share of units whose label is their references' majority
    class (``label match``).
    """
    labels = inputs.labels_of(inputs.circuits.sample_ids)
    vectors = inputs.embeddings[reference]["embeddings"].numpy()
    scores = {
        (unit["kind"], unit["layer"]): np.asarray(unit["scores"], dtype=np.float64)
        for unit in hierarchy["units"]
    }
    neurons = kind_label("neurons")
    upper = next(unit["layer"] for unit in hierarchy["units"] if unit["kind"] == neurons)

    def row(label, layer, name, count, purity, distance, groups=()):
        hierarchy_values = scores.get((label, layer))
        semantic = semantic_summary(groups)
        # The catalogue's group of a row: its name without the layer (``pure k=2``).
        labelled = catalogue_summary(catalogue or (), name.split(" (")[0], layer)
        return {
            "units": name,
            "count": count,
            "purity": list(purity[:2]),
            "distance": list(distance),
            "clarity": semantic["clarity"],
            "redundancy": semantic["redundancy"],
            "polysemanticity": labelled["polysemanticity"],
            "label match": labelled["label_match"],
            "hierarchy": (
                list(mean_and_standard_error(hierarchy_values))
                if hierarchy_values is not None
                else [None, None]
            ),
        }

    flat = np.zeros(labels.shape, dtype=np.int64)
    rows = [
        row(
            neurons,
            upper,
            f"{neurons} ({upper})",
            len(labels),
            purity_summary(labels, None),
            distance_summary(vectors, flat)["random"],
            list(vectors),
        )
    ]
    for method, tensors in inputs.clusters.items():
        label = kind_label("pure", method)
        assignment = tensors[f"k{k}/labels"].numpy()
        purity = purity_summary(labels, assignment)
        rows.append(
            row(
                label,
                upper,
                f"{label} k={k}",
                purity[2],
                purity,
                distance_summary(vectors, assignment)["intra"],
                [
                    neuron[assignment[row_index] == cluster]
                    for row_index, neuron in enumerate(vectors)
                    for cluster in np.unique(assignment[row_index])
                ],
            )
        )
    for sae in inputs.saes:
        tensors, layer = sae["embeddings"], sae["layer"]
        label = kind_label("sae", sae["name"])
        name = f"{label} ({layer})"
        if len(tensors["sample_ids"]) == 0:  # no feature ever fired: nothing to score
            rows.append(row(label, layer, name, 0, [None, None], [None, None]))
            continue
        sae_labels = inputs.labels_of(tensors["sample_ids"])
        distance = distance_summary(tensors["embeddings"].numpy(), np.zeros(sae_labels.shape))
        purity = purity_summary(sae_labels, None)
        groups = list(tensors["embeddings"].numpy())
        rows.append(row(label, layer, name, len(sae_labels), purity, distance["random"], groups))
    return rows


# Two units share a meaning when their mean reference directions are this close (cosine).
REDUNDANCY_THRESHOLD = 0.9


def catalogue_summary(records: Sequence[dict], group: str, layer: str) -> dict[str, list]:
    """Mean and standard error of the polysemanticity and label match of the catalogue's
    units of one group (``[None, None]`` where the group has none)."""
    members = [
        record for record in records if record["group"] == group and record["layer"] == layer
    ]
    summary = {}
    for key in ("polysemanticity", "label_match"):
        values = np.asarray([float(record[key]) for record in members], dtype=np.float64)
        summary[key] = list(mean_and_standard_error(values)) if len(values) else [None, None]
    return summary


def semantic_summary(groups: Sequence[np.ndarray]) -> dict[str, list]:
    """Clarity and redundancy (mean, standard error) of units given as arrays ``[R_u, D]``
    of their reference embeddings (the references of a unit may differ in number).

    Clarity needs two references: units with fewer are left out of its mean. No units
    give ``[None, None]``.
    """
    if not groups:
        return {"clarity": [None, None], "redundancy": [None, None]}
    tensors = [torch.as_tensor(np.asarray(group, dtype=np.float64)) for group in groups]
    clear = [float(clarity(group[None])[0]) for group in tensors if len(group) >= 2]
    directions = torch.cat([mean_directions(group[None]) for group in tensors])
    shared = redundancy_of_directions(directions, REDUNDANCY_THRESHOLD).double().numpy()
    return {
        "clarity": list(mean_and_standard_error(np.asarray(clear))) if clear else [None, None],
        "redundancy": list(mean_and_standard_error(shared)),
    }


def write_unit_tables(
    rows: Sequence[dict],
    sae_metrics: Sequence[dict],
    stems: Mapping[str, str | Path],
    experiment: str,
    reference: str,
) -> list[Path]:
    """The units table and, when there are SAEs, the SAE table (CSV, Markdown, LaTeX),
    each at its path stem in ``stems`` (keys of :data:`UNIT_TABLES`)."""
    frame = pd.DataFrame(
        {
            "count": {row["units"]: row["count"] for row in rows},
            "purity": {row["units"]: format_mean_se(*row["purity"]) for row in rows},
            f"within-unit {reference} distance": {
                row["units"]: format_mean_se(*row["distance"]) for row in rows
            },
            "clarity": {row["units"]: format_mean_se(*row["clarity"]) for row in rows},
            "redundancy": {row["units"]: format_mean_se(*row["redundancy"]) for row in rows},
            "polysemanticity": {
                row["units"]: format_mean_se(*row.get("polysemanticity", [None, None]))
                for row in rows
            },
            "label match": {
                row["units"]: format_mean_se(*row.get("label match", [None, None])) for row in rows
            },
            "hierarchy score": {row["units"]: format_mean_se(*row["hierarchy"]) for row in rows},
        }
    )
    frame.index.name = "units"
    written = write_table(
        frame,
        stems["units"],
        f"{experiment}: every kind of unit scored alike. Purity: share of a unit's references "
        f"with its most common label; within-unit distance: mean distance between the {reference} "
        "embeddings of its cropped references; clarity: mean cosine similarity between two of "
        "them; redundancy: how many other units of the row have a mean reference direction "
        f"within cosine {REDUNDANCY_THRESHOLD} of its own; polysemanticity: the effective number "
        "of label-vocabulary entries its references are nearest to; label match: share of units "
        "whose label (nearest vocabulary entry to the mean reference direction) is the majority "
        "class of their references; hierarchy score: f^T D f / |f|^2 of "
        "its mean activation per class (lower is more monosemantic). Mean and standard error "
        "over units.",
        label="tab:units",
    )
    if sae_metrics:
        columns = {
            "features": "features",
            "alive units": "alive",
            "L0": "l0",
            "dead fraction": "dead_fraction",
            "dense fraction": "dense_fraction",
            "FVU": "fvu",
            "accuracy": "accuracy",
            "spliced accuracy": "spliced_accuracy",
        }
        frame = pd.DataFrame(
            {
                title: {f"{m['name']} ({m['layer']})": m[key] for m in sae_metrics}
                for title, key in columns.items()
            }
        )
        frame.index.name = "SAE"
        written += write_table(
            frame,
            stems["sae"],
            f"{experiment}: sparse autoencoders on pooled activations, on the test split: mean "
            "number of active features (L0), features that never fire (dead) or fire on more "
            "than 10% of samples (dense), fraction of variance unexplained (FVU), and the "
            "model's accuracy as is and with the reconstruction spliced in.",
            label="tab:sae",
        )
    return written


def write_labels_table(
    catalogue: Sequence[dict],
    stem: str | Path,
    experiment: str,
    reference: str,
    vocabulary: Mapping,
) -> list[Path]:
    """The labels table (CSV, Markdown, LaTeX at ``stem``): per group of the catalogue
    (neurons, each clustering method at each k, each SAE), how often a unit's label is the
    majority class of its references, and the purity, polysemanticity and clarity of its
    units (mean and standard error)."""
    groups = list(dict.fromkeys((record["group"], record["layer"]) for record in catalogue))
    columns = {"label match": "label_match", "purity": "purity"}
    columns |= {"polysemanticity": "polysemanticity", "clarity": "clarity"}
    table = {"count": {}} | {title: {} for title in columns}
    for group, layer in groups:
        members = [r for r in catalogue if r["group"] == group and r["layer"] == layer]
        name = f"{group} ({layer})"
        table["count"][name] = len(members)
        for title, key in columns.items():
            values = np.asarray([float(r[key]) for r in members if r[key] is not None])
            summary = mean_and_standard_error(values) if len(values) else (None, None)
            table[title][name] = format_mean_se(*summary)
    frame = pd.DataFrame(table)
    frame.index.name = "units"
    return write_table(
        frame,
        stem,
        f"{experiment}: unit labels. A unit's label is the entry of the label vocabulary "
        f"({vocabulary.get('entries')} {vocabulary.get('source')}) nearest to the mean "
        f"{reference} embedding of its cropped references; label match: share of units whose "
        "label is the majority class of their references; purity: that class's share; "
        "polysemanticity: the effective number of vocabulary entries its references are "
        "nearest to; clarity: mean cosine similarity between two of its references. Mean and "
        "standard error over units.",
        label="tab:labels",
    )


def plot_semantic_distances(results: dict, path) -> None:
    """Grouped bars: intra and inter distance per method and k, random pairs dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monoscope.plotting import save_figure

    methods = list(dict.fromkeys(row["method"] for row in results["distances"]))
    ks = sorted({row["k"] for row in results["distances"]})
    figure, axes = plt.subplots(
        1, len(ks), figsize=(3.2 * len(ks), 3.4), sharey=True, squeeze=False
    )
    for axis, k in zip(axes[0], ks, strict=True):
        rows = {row["method"]: row for row in results["distances"] if row["k"] == k}
        x = np.arange(len(methods))
        for offset, which, colour in ((-0.2, "intra", "tab:blue"), (0.2, "inter", "tab:orange")):
            means = [rows[m][which][0] for m in methods]
            errors = [rows[m][which][1] for m in methods]
            axis.bar(
                x + offset, means, width=0.4, yerr=errors, color=colour, label=which, capsize=2
            )
        axis.axhline(
            results["random"][0], color="grey", linestyle="--", linewidth=1, label="random"
        )
        axis.set_xticks(x, methods, rotation=30, fontsize=8)
        axis.set_title(f"k = {k}", fontsize=9)
    axes[0, 0].set_ylabel(f"{results['reference']} distance")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def plot_alignment(results: dict, path) -> None:
    """Bars: Pearson and distance correlation of each space with the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monoscope.plotting import save_figure

    spaces = [s for s in results["alignment"] if s != results["reference"]]
    x = np.arange(len(spaces))
    figure, axis = plt.subplots(figsize=(1.4 * len(spaces) + 2, 3.4))
    for offset, measure, colour in ((-0.2, "pearson", "tab:green"), (0.2, "dcor", "tab:purple")):
        means = [results["alignment"][s][measure][0] for s in spaces]
        errors = [results["alignment"][s][measure][1] for s in spaces]
        axis.bar(x + offset, means, width=0.4, yerr=errors, color=colour, label=measure, capsize=2)
    axis.set_xticks(x, spaces, rotation=20, fontsize=8)
    axis.set_ylabel(f"correlation with {results['reference']} distances")
    axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
