# Helpers of rules/sae.smk: wildcard constraints, cross-key config checks, input
# functions and targets.


wildcard_constraints:
    sae=r"[A-Za-z0-9_]+",


SAE_LAYERS = config["sae"]["layers"]
SAE_MODELS = sorted(config["sae"]["models"])
# (layer, SAE) pairs, layer-major: the order of sae_files.
SAE_PAIRS = [(layer, sae) for layer in SAE_LAYERS for sae in SAE_MODELS]
# The hierarchy score of neurons reads the upper layer's pooled activations.
ACTIVATION_LAYERS = list(dict.fromkeys(SAE_LAYERS + [config["model"]["upper_layer"]]))

# Cross-key checks the schema cannot express; they fail before any job starts.
if SAE_LAYERS and not SAE_MODELS:
    raise ValueError(f"sae.layers {SAE_LAYERS} are set but sae.models defines no SAE")
for _name, _sae in config["sae"]["models"].items():
    _needs = {"l1": "l1_coefficient", "topk": "k"}[_sae["variant"]]
    if _needs not in _sae:
        raise ValueError(
            f"sae.models.{_name}: a {_sae['variant']} SAE needs '{_needs}'"
        )


def sae_files(name):
    """One file per (SAE layer, SAE model), e.g. ``metrics.json``."""
    return expand(
        out("sae/{layer}/{sae}/{name}"), layer=SAE_LAYERS, sae=SAE_MODELS, name=name
    )


def upper_activation_shards():
    return gather.activations(
        out(f"activations/{config['model']['upper_layer']}/{{scatteritem}}.safetensors")
    )


def hierarchy_inputs(wildcards):
    """Everything the hierarchy score reads: pooled activations, clusters, SAEs."""
    inputs = {
        "samples": out("data/samples.csv"),
        "classes": out("data/classes.json"),
        "model": subject_model_file(),
        "upper_activations": upper_activation_shards(),
        "saes": sae_files("model.safetensors"),
        "sae_activations": [
            path
            for layer in SAE_LAYERS
            for path in gather.activations(
                out(f"activations/{layer}/{{scatteritem}}.safetensors")
            )
        ],
    }
    if "pure" in config["clustering"]["methods"]:
        inputs["clusters"] = out("clusters/pure.safetensors")
    return inputs
