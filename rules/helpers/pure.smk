# Helpers of PURE's rules (rules/references.smk, circuits.smk, clustering.smk,
# crops.smk, evaluation.smk): wildcard constraints, cross-key config checks, input
# functions and targets. The SAE units it evaluates alongside: rules/helpers/sae.smk.


# Constraints that list names repeat the library's; tests/test_allowed_values.py
# compares them.
wildcard_constraints:
    mode="actmax|relmax",
    method=r"[A-Za-z0-9_]+",
    embedder=r"[A-Za-z0-9_]+",
    neuron=r"\d+",
    k=r"\d+",


WITH_JUDGE = config["data"]["name"] == "digits"
REFERENCE_LAYERS = config["references"]["layers"] or [config["model"]["upper_layer"]]
EMBEDDERS = config["evaluation"]["embedders"]

# Cross-key checks the schema cannot express; they fail before any job starts.
if config["circuits"]["references"] not in config["references"]["modes"]:
    raise ValueError(
        f"circuits.references: '{config['circuits']['references']}' is not in "
        f"references.modes {config['references']['modes']}"
    )
if config["figures"]["k"] not in config["clustering"]["k"]:
    raise ValueError(
        f"figures.k: {config['figures']['k']} is not in clustering.k {config['clustering']['k']}"
    )
if max(config["clustering"]["k"]) > config["references"]["n"]:
    raise ValueError(
        f"clustering.k: {max(config['clustering']['k'])} clusters need at least as many "
        f"references, but references.n is {config['references']['n']}"
    )
if config["model"]["upper_layer"] not in REFERENCE_LAYERS:
    raise ValueError(
        f"references.layers {REFERENCE_LAYERS} must include model.upper_layer "
        f"'{config['model']['upper_layer']}' (its references get circuits)"
    )
for _name in EMBEDDERS:
    if _name not in config["embedders"]:
        raise ValueError(
            f"evaluation.embedders: '{_name}' is not defined under embedders "
            f"(defined: {sorted(config['embedders'])})"
        )
if config["evaluation"]["reference"] not in EMBEDDERS:
    raise ValueError(
        f"evaluation.reference: '{config['evaluation']['reference']}' is not in "
        f"evaluation.embedders {EMBEDDERS}"
    )
for _method in config["clustering"]["methods"]:
    if _method not in ("pure", "activation") and _method not in EMBEDDERS:
        raise ValueError(
            f"clustering.methods: '{_method}' is neither pure, activation nor an embedder "
            f"in evaluation.embedders {EMBEDDERS}"
        )
if config["hierarchy"]["k"] not in config["clustering"]["k"]:
    raise ValueError(
        f"hierarchy.k: {config['hierarchy']['k']} is not in clustering.k {config['clustering']['k']}"
    )

_neurons = config["neurons"]
if isinstance(_neurons, dict) and "start" in _neurons:
    if _neurons["start"] >= _neurons["stop"]:
        raise ValueError(
            f"neurons: the range {_neurons} is empty (start must be below stop)"
        )
    _neurons = list(range(_neurons["start"], _neurons["stop"]))
if _neurons != "all":
    _count = len(_neurons) if isinstance(_neurons, list) else _neurons["top"]
    for _stage in ("circuits", "crops"):
        if config[_stage]["shards"] > _count:
            raise ValueError(
                f"{_stage}.shards: {config[_stage]['shards']} shards for {_count} analysed "
                f"neurons (neurons: {config['neurons']}) would leave a shard empty"
            )
if isinstance(_neurons, list):
    _outside = sorted(set(config["figures"]["neurons"]) - set(_neurons))
    if _outside:
        raise ValueError(
            f"figures.neurons: {_outside} are not among the analysed neurons "
            f"(neurons: {config['neurons']})"
        )
if isinstance(_neurons, dict) and _neurons["top"] < len(config["figures"]["neurons"]):
    raise ValueError(
        f"figures.neurons: {len(config['figures']['neurons'])} neurons shown but "
        f"neurons.top is {_neurons['top']}"
    )

_weights = config["model"]["weights"]
if "relmax" in config["references"]["modes"] and os.path.isfile(_weights):
    from monoscope.models.registry import weight_file_record  # reads the header only

    if weight_file_record(_weights).get("head") == "none":
        raise ValueError(
            f"references.modes: relmax starts relevance at a class logit, but "
            f"model.weights {_weights} has no classifier head (head: none); use [actmax]"
        )


def embedder_params(name):
    """An embedder's config, with the demo judge's trained weights resolved."""
    embedder = _sorted(config["embedders"][name])
    if embedder["weights"] == "trained":
        embedder["weights"] = out("models/judge.safetensors")
    return embedder


def embedder_weight_files(name):
    """An embedder's weight file as an input when it is a file (trained or existing)."""
    weights = embedder_params(name)["weights"]
    return [weights] if weights.startswith(OUT) else weight_input(weights)


def embedder_weight_input(wildcards):
    """:func:`embedder_weight_files` of the job's ``{embedder}``."""
    return embedder_weight_files(wildcards.embedder)


def cluster_vectors_input(wildcards):
    """What a clustering method clusters: circuits/activations, or an embedder's vectors."""
    if wildcards.method in ("pure", "activation"):
        return out("circuits/circuits.safetensors")
    return out(f"embeddings/{wildcards.method}.safetensors")


def table_paths():
    """The evaluation's tables, three files each (sae.smk defines SAE_LAYERS)."""
    tables = ["semantic_distances", "alignment", "purity", "units", "labels"]
    if config["clustering"]["stability_seeds"]:
        tables.append("stability")
    if SAE_LAYERS:
        tables.append("sae")
    return [path for table in tables for path in table_files(table)]


def reference_grid_figures():
    """(mode, layer, file) of every reference grid; rule plot_references draws them all."""
    return [
        (mode, layer, out(f"references/grid_{mode}_{layer}.png"))
        for mode in config["references"]["modes"]
        for layer in REFERENCE_LAYERS
    ]


def reference_grids():
    return [path for _, _, path in reference_grid_figures()]


def virtual_neuron_figures():
    """(method, neuron, file) of every virtual-neuron figure, at figures.k; rule
    plot_virtual_neurons draws them all."""
    figures = config["figures"]
    return [
        (
            method,
            neuron,
            out(f"figures/{method}/virtual_neurons_k{figures['k']}_neuron{neuron}.png"),
        )
        for method in config["clustering"]["methods"]
        for neuron in figures["neurons"]
    ]


def figure_files():
    grids = [path for _, _, path in virtual_neuron_figures()]
    umaps = umap_files() if "pure" in config["clustering"]["methods"] else []
    return grids + umaps


def umap_files():
    return expand(
        out("figures/pure/umap_k{k}_neuron{neuron}.png"),
        k=config["figures"]["k"],
        neuron=config["figures"]["neurons"],
    )


def pure_targets():
    targets = [out("references/references.safetensors"), *reference_grids()]
    targets.append(out("circuits/circuits.safetensors"))
    targets += expand(
        out("clusters/{method}.safetensors"), method=config["clustering"]["methods"]
    )
    targets += figure_files()
    targets += expand(out("embeddings/{embedder}.safetensors"), embedder=EMBEDDERS)
    targets += expand(
        out("figures/crops/neuron{neuron}.png"), neuron=config["figures"]["neurons"]
    )
    targets += table_paths()
    targets += [out("figures/semantic_distances.png"), out("figures/alignment.png")]
    targets.append(subject_model_file())
    targets.append(out("evaluation/hierarchy.json"))
    targets.append(out("atlas"))
    targets += sae_files("metrics.json")
    if IS_DEMO_MODEL:
        targets.append(out("models/subject_metrics.json"))
    if WITH_JUDGE:
        targets.append(out("models/judge.safetensors"))
    return targets
