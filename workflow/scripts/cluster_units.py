"""k-means of every neuron's references: PURE on circuits, the baseline on activations,
and the upper reference on an embedder's vectors of the crops."""

from monoscope.io import load_tensors, save_tensors
from monoscope.logs import setup_logging
from monoscope.pure.clustering import ClusterConfig, cluster_units

setup_logging(snakemake.log[0])
method = snakemake.wildcards.method
tensors, metadata = load_tensors(snakemake.input.vectors)
key = {"pure": "circuits", "activation": "activations"}.get(method, "embeddings")
options = dict(snakemake.params.clustering)
config = ClusterConfig(
    ks=tuple(options["k"]),
    n_init=options["n_init"],
    seed=options["seed"],
    auto_k=options["auto_k"],
    stability_seeds=options["stability_seeds"],
)
clusters = cluster_units(tensors[key], config)
clusters["sample_ids"] = tensors["sample_ids"]
clusters["channels"] = tensors["channels"]  # the upper channel of each row (neurons selection)
save_tensors(
    snakemake.output.clusters,
    clusters,
    metadata | {"cluster_method": method, "vectors": key, "ks": list(config.ks)},
)
