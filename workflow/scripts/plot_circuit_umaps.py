"""UMAP plots of the selected neurons' circuit vectors with reference thumbnails."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.io import load_tensors
from monoscope.logs import setup_logging
from monoscope.plotting import plot_circuit_umap
from monoscope.pure.circuits import load_circuits
from monoscope.references import row_of_channel

setup_logging(snakemake.log[0])
params = snakemake.params
circuits, _ = load_circuits(snakemake.input.circuits)
clusters, _ = load_tensors(snakemake.input.clusters)
labels = clusters[f"k{params.k}/labels"]
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
for neuron, path in zip(params.neurons, snakemake.output.figures, strict=True):
    row = row_of_channel(circuits.channels, neuron)
    plot_circuit_umap(
        circuits.circuits[row],
        labels[row],
        circuits.sample_ids[row],
        dataset,
        path,
        thumbnails=params.thumbnails,
        seed=params.seed,
        title=f"neuron {neuron}: circuits, {params.k} virtual neurons",
    )
