"""Semantic distances, alignment and purity; the paper's tables."""

from pathlib import Path

from monoscope.evaluation import evaluate_pure, write_pure_tables
from monoscope.io import write_json
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
params = snakemake.params
results = evaluate_pure(
    clusters={m: p for m, p in zip(params.methods, snakemake.input.clusters, strict=True)},
    embeddings={e: p for e, p in zip(params.embedders, snakemake.input.embeddings, strict=True)},
    circuits=snakemake.input.circuits,
    samples=snakemake.input.samples,
    ks=params.ks,
    reference=params.evaluation["reference"],
    alignment=params.evaluation["alignment"],
)
write_pure_tables(
    results, Path(snakemake.output.results).parent.parent / "tables", params.experiment
)
write_json(snakemake.output.results, results)
