"""Semantic distances, alignment and purity; the units table (neurons, virtual neurons,
SAE features with their hierarchy scores and labels) and the SAE table; the catalogue of
every unit (monoscope.catalogue).

Every input is loaded once; every table goes to the rule's output of its name (the
CSV, Markdown and LaTeX files of one stem), and nothing else is written."""

from pathlib import Path

from monoscope.catalogue import ReferenceSet, build_catalogue, save_catalogue
from monoscope.evaluation import (
    CATALOGUE_TABLES,
    PURE_TABLES,
    UNIT_TABLES,
    evaluate,
    load_evaluation_inputs,
    write_labels_table,
    write_pure_tables,
    write_unit_tables,
)
from monoscope.io import load_tensors, read_json, write_json
from monoscope.logs import setup_logging
from monoscope.units import kind_label
from monoscope.vocabulary import load_vocabulary, readable_class_names

setup_logging(snakemake.log[0])
params, inputs, output = snakemake.params, snakemake.input, snakemake.output
reference = params.evaluation["reference"]


def stem(name):
    """The common stem of table ``name``'s declared ``.csv``, ``.md`` and ``.tex`` files."""
    paths = [Path(path) for path in getattr(output, name)]
    stems = {path.with_suffix("") for path in paths}
    if len(stems) != 1 or sorted(path.suffix for path in paths) != [".csv", ".md", ".tex"]:
        raise ValueError(f"output {name}: expected <stem>.csv, .md and .tex, got {paths}")
    return stems.pop()


# The SAE inputs are layer-major over (sae.layers x sae.models), as common.smk expands them.
pairs = [(layer, name) for layer in params.sae_layers for name in params.sae_models]
saes = [
    {"name": name, "layer": layer, "embeddings": embedded}
    for (layer, name), embedded in zip(pairs, inputs.sae_embeddings, strict=True)
]
sae_metrics = [
    read_json(metrics) | {"name": name}
    for (_, name), metrics in zip(pairs, inputs.sae_metrics, strict=True)
]
loaded = load_evaluation_inputs(
    clusters=dict(zip(params.methods, inputs.clusters, strict=True)),
    embeddings=dict(zip(params.embedders, inputs.embeddings, strict=True)),
    circuits=inputs.circuits,
    samples=inputs.samples,
    saes=saes,
)
vocabulary, vocabulary_record = load_vocabulary(inputs.vocabulary)
class_names = readable_class_names(read_json(inputs.classes))  # the vocabulary's names
reference_sets = []
for path in inputs.contrastive:  # the contrastive dimensions, when that branch runs
    tensors, metadata = load_tensors(path)
    reference_sets.append(
        ReferenceSet(
            kind=kind_label("contrastive", metadata["representation"]),
            layer=metadata["features"],
            units=tensors["dimensions"],
            positions=tensors["positions"],
            labels=tensors["labels"],
            embeddings=tensors["embeddings"],
            classes=readable_class_names(metadata["classes"]),
        )
    )
units, directions = build_catalogue(
    loaded,
    space=reference,
    vocabulary=vocabulary,
    class_names=class_names,
    ks=params.ks,
    layer=params.layer,
    top=params.labels["top"],
    reference_sets=reference_sets,
)
results = evaluate(
    loaded,
    ks=params.ks,
    reference=reference,
    alignment=params.evaluation["alignment"],
    hierarchy_k=params.hierarchy_k,
    hierarchy=read_json(inputs.hierarchy),
    catalogue=units,
)
results["sae"] = [{k: v for k, v in m.items() if k != "units"} for m in sae_metrics]
tables = [name for name in PURE_TABLES + UNIT_TABLES + CATALOGUE_TABLES if name in output.keys()]
stems = {name: stem(name) for name in tables}
written = write_pure_tables(results, stems, params.experiment)
written += write_unit_tables(results["units"], results["sae"], stems, params.experiment, reference)
vocabulary_summary = {"source": vocabulary.source, "entries": len(vocabulary.names)}
if "labels" in stems:
    written += write_labels_table(
        units, stems["labels"], params.experiment, reference, vocabulary_summary
    )
declared = {Path(path) for name in tables for path in getattr(output, name)}
if set(written) != declared:
    raise ValueError(f"tables written {sorted(map(str, written))} are not the declared outputs")
write_json(output.results, results)
save_catalogue(
    output.catalogue,
    output.directions,
    units,
    directions,
    {
        "experiment": params.experiment,
        "space": reference,
        "embedder": dict(params.embedder),
        "vocabulary": vocabulary_summary
        | {"embedder": vocabulary_record.get("embedder", reference)},
        "classes": class_names,
        "ks": list(params.ks),
    },
)
