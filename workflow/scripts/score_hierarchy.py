"""The hierarchy score f^T D f / |f|^2 of neurons, PURE virtual neurons and SAE features,
from their mean activation per class over the test split."""

from pathlib import Path

from monoscope.activations import ActivationStore
from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.hierarchy import distances_from_config, hierarchy_score, observed_classes
from monoscope.io import load_tensors, read_json, write_json
from monoscope.logs import start_job
from monoscope.models import ModelConfig, load_model
from monoscope.pure.virtual_neurons import VirtualNeurons
from monoscope.sae import load_sae
from monoscope.units import Neurons, SAEFeatures, VirtualNeuronUnits

start_job(snakemake)
params, inputs = snakemake.params, snakemake.input
device = resolve_device(params.device)
options = params.hierarchy
classes = read_json(inputs.classes)
distances = distances_from_config(options, classes)
limit = options["max_samples"] or None


def store_of(paths):
    return ActivationStore(paths, split="test", limit=limit)


def scored(units, means, extra=None):
    # Classes without a test sample (a small data set) drop out of f and D alike.
    seen = observed_classes(means)
    scores = hierarchy_score(means[:, seen], distances[seen][:, seen])
    return {
        "kind": units.label,
        "scores": [None if s != s else float(s) for s in scores],
        "classes_scored": int(seen.sum()),
        **(extra or {}),
    }


upper = store_of(inputs.upper_activations)
clusters = load_tensors(inputs.clusters)[0] if "clusters" in inputs.keys() else {}
# The neurons row scores the analysed neurons (the neurons key), like its purity does.
analysed = clusters["channels"].numpy() if "channels" in clusters else None
neurons = Neurons(None, params.upper_layer, analysed, num_channels=upper.dim)
units = [
    scored(
        neurons,
        neurons.class_means(upper, len(classes), missing="nan"),
        {"layer": params.upper_layer}
        | ({} if analysed is None else {"channels": analysed.tolist()}),
    )
]
if clusters:
    k = options["k"]
    model = load_model(from_mapping(ModelConfig, params.model), device)
    virtual = VirtualNeuronUnits(
        VirtualNeurons(
            model,
            params.lower_layer,
            params.upper_layer,
            clusters[f"k{k}/centroids"],
            params.circuits["method"],
            params.circuits["batch_rows"],
            channels=clusters.get("channels"),
        )
    )
    dataset = open_dataset(from_mapping(DataConfig, params.data), inputs.samples, "test")
    means = virtual.class_means(upper, len(classes), dataset, missing="nan")
    units.append(scored(virtual, means, {"layer": params.upper_layer, "k": k}))
# inputs.saes is layer-major over (sae.layers x sae.models), as common.smk expands it.
pairs = [(layer, name) for layer in params.sae_layers for name in params.sae_models]
for (layer, name), path in zip(pairs, inputs.saes, strict=True):
    shards = [shard for shard in inputs.sae_activations if Path(shard).parent.name == layer]
    features = SAEFeatures(None, layer, load_sae(path).to(device).eval(), name)
    means = features.class_means(store_of(shards), len(classes), missing="nan")
    units.append(scored(features, means, {"layer": layer}))
write_json(
    snakemake.output[0],
    {"distances": options["kind"], "samples": upper.num_samples, "units": units},
)
