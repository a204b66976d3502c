"""k-means of every neuron's references: PURE on circuits, the baseline on activations."""

from monoscope.circuits import load_circuits
from monoscope.clustering import ClusterConfig, cluster_units
from monoscope.io import save_tensors
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
circuits, metadata = load_circuits(snakemake.input[0])
vectors = {"pure": circuits.circuits, "activation": circuits.activations}[
    snakemake.wildcards.method
]
options = dict(snakemake.params.clustering)
config = ClusterConfig(
    ks=tuple(options["k"]), n_init=options["n_init"], seed=options["seed"], auto_k=options["auto_k"]
)
clusters = cluster_units(vectors, config)
clusters["sample_ids"] = circuits.sample_ids
save_tensors(
    snakemake.output[0],
    clusters,
    metadata | {"cluster_method": snakemake.wildcards.method, "ks": list(config.ks)},
)
