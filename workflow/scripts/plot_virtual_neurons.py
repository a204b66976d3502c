"""Each figure neuron's references grouped by its virtual neurons, for every method (at one k)."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.io import load_tensors, read_json
from monoscope.logs import setup_logging
from monoscope.plotting import plot_virtual_neurons
from monoscope.references import row_of_channel

setup_logging(snakemake.log[0])
params = snakemake.params
k = int(params.k)
clusters = {
    method: load_tensors(path)[0]
    for method, path in zip(params.methods, snakemake.input.clusters, strict=True)
}
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
class_names = read_json(snakemake.input.classes)
for (method, neuron), figure in zip(params.figures, snakemake.output.figures, strict=True):
    row = row_of_channel(clusters[method]["channels"], neuron)
    plot_virtual_neurons(
        clusters[method]["sample_ids"][row],
        clusters[method][f"k{k}/labels"][row],
        dataset,
        figure,
        class_names=class_names,
        columns=params.columns,
        title=f"neuron {neuron}: {k} virtual neurons ({method})",
    )
