"""Bar charts of the evaluation: intra vs inter distances, alignment with the reference."""

from monoscope.evaluation import plot_alignment, plot_semantic_distances
from monoscope.io import read_json
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
results = read_json(snakemake.input.results)
plot_semantic_distances(results, snakemake.output.distances)
plot_alignment(results, snakemake.output.alignment)
