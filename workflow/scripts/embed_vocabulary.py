"""The label vocabulary of one embedder: text prompts or class prototypes (labels.source)."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.embedders import EmbedderConfig, build_embedder
from monoscope.io import read_json
from monoscope.logs import start_job
from monoscope.vocabulary import (
    VocabularyConfig,
    prototype_vocabulary,
    resolve_source,
    save_vocabulary,
    text_vocabulary,
    vocabulary_words,
)

start_job(snakemake)
params = snakemake.params
name = snakemake.wildcards.embedder
embedder_config = from_mapping(EmbedderConfig, params.embedder)
embedder = build_embedder(name, embedder_config, resolve_device(params.device))
config = from_mapping(VocabularyConfig, params.labels)
class_names = read_json(snakemake.input.classes)
source = resolve_source(config, embedder)
if source == "text":
    words = vocabulary_words(config.words, class_names)
    vocabulary = text_vocabulary(embedder, words, config.templates)
else:
    dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
    vocabulary = prototype_vocabulary(
        embedder, dataset, class_names, config.images_per_class, embedder_config.batch_size
    )
save_vocabulary(
    snakemake.output.vocabulary,
    vocabulary,
    {"embedder": name, "words": config.words if source == "text" else "classes"},
)
