"""Semantic distances, alignment and purity; the units table (neurons, virtual neurons,
SAE features with their hierarchy scores) and the SAE table."""

from pathlib import Path

from monoscope.evaluation import (
    evaluate_pure,
    evaluate_units,
    write_pure_tables,
    write_unit_tables,
)
from monoscope.io import read_json, write_json
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
params, inputs = snakemake.params, snakemake.input
reference = params.evaluation["reference"]
clusters = {m: p for m, p in zip(params.methods, inputs.clusters, strict=True)}
embeddings = {e: p for e, p in zip(params.embedders, inputs.embeddings, strict=True)}
results = evaluate_pure(
    clusters=clusters,
    embeddings=embeddings,
    circuits=inputs.circuits,
    samples=inputs.samples,
    ks=params.ks,
    reference=reference,
    alignment=params.evaluation["alignment"],
)
# The SAE inputs are layer-major over (sae.layers x sae.models), as common.smk expands them.
pairs = [(layer, name) for layer in params.sae_layers for name in params.sae_models]
saes, sae_metrics = [], []
for (layer, name), embedded, metrics in zip(
    pairs, inputs.sae_embeddings, inputs.sae_metrics, strict=True
):
    saes.append({"name": name, "layer": layer, "embeddings": embedded})
    sae_metrics.append(read_json(metrics) | {"name": name})
results["units"] = evaluate_units(
    clusters,
    embeddings[reference],
    inputs.circuits,
    inputs.samples,
    params.hierarchy_k,
    read_json(inputs.hierarchy),
    saes,
)
results["sae"] = [{k: v for k, v in m.items() if k != "units"} for m in sae_metrics]
folder = Path(snakemake.output.results).parent.parent / "tables"
write_pure_tables(results, folder, params.experiment)
write_unit_tables(results["units"], results["sae"], folder, params.experiment, reference)
write_json(snakemake.output.results, results)
