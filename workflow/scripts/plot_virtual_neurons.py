"""Each figure neuron's references grouped by its virtual neurons (one method, one k)."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.io import load_tensors, read_json
from monoscope.logs import setup_logging
from monoscope.plotting import plot_virtual_neurons
from monoscope.references import row_of_channel

setup_logging(snakemake.log[0])
clusters, _ = load_tensors(snakemake.input.clusters)
method, k = snakemake.wildcards.method, int(snakemake.wildcards.k)
labels = clusters[f"k{k}/labels"]
dataset = open_dataset(from_mapping(DataConfig, snakemake.params.data), snakemake.input.samples)
class_names = read_json(snakemake.input.classes)
for neuron, figure in zip(snakemake.params.neurons, snakemake.output.figures, strict=True):
    row = row_of_channel(clusters["channels"], neuron)
    plot_virtual_neurons(
        clusters["sample_ids"][row],
        labels[row],
        dataset,
        figure,
        class_names=class_names,
        columns=snakemake.params.columns,
        title=f"neuron {neuron}: {k} virtual neurons ({method})",
    )
