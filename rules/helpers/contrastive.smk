# Helpers of rules/contrastive.smk: wildcard constraints, cross-key config checks, input
# functions and targets.


# Constraints that list names repeat the library's; tests/test_allowed_values.py
# compares them.
wildcard_constraints:
    representation="simclr|ncl|sae",
    probe="linear|selected|finetune",
    noise="clean|label|gaussian|uniform|fewshot",
    level=r"[0-9.]+(e-?[0-9]+)?",


CONTRASTIVE = config["contrastive"]
CONTRASTIVE_REPRESENTATIONS = list(CONTRASTIVE["methods"]) + (
    ["sae"] if CONTRASTIVE["sae"]["enabled"] else []
)
# The probes on frozen features, which rule contrastive_frozen_probes runs together.
CONTRASTIVE_FROZEN_PROBES = [
    probe for probe in CONTRASTIVE["probes"] if probe in ("linear", "selected")
]

# Cross-key checks the schema cannot express; they fail before any job starts (data
# roots: monoscope.preflight.check_config, run by common.smk).
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


def contrastive_samples():
    """The digits' sample table, drawn once by prepare_contrastive_data so that no job
    imports scikit-learn to draw the split again; other data sets come split."""
    if "contrastive" in BRANCHES and CONTRASTIVE["data"]["name"] == "digits":
        return [out("contrastive/data/samples.csv")]
    return []


def contrastive_settings():
    """(noise, level) pairs of the robustness sweep, clean first; levels as in paths."""
    settings = [("clean", "0")]
    for noise in ("label", "gaussian", "uniform", "fewshot"):
        settings += [
            (noise, f"{level:g}") for level in CONTRASTIVE["robustness"][noise]
        ]
    return settings


def contrastive_probe_outputs(representation, probes):
    """The results of ``probes`` over every setting, probe by probe: the order in which
    workflow/scripts/contrastive_probe.py writes them. ``representation`` may be the
    wildcard ``"{representation}"``."""
    return [
        out(f"contrastive/{representation}/probes/{probe}/{noise}_{level}.json")
        for probe in probes
        for noise, level in contrastive_settings()
    ]


def contrastive_probe_files():
    """One result per (representation, probe, setting); finetuning skips the SAE."""
    return [
        path
        for representation in CONTRASTIVE_REPRESENTATIONS
        for path in contrastive_probe_outputs(
            representation,
            [
                probe
                for probe in CONTRASTIVE["probes"]
                if probe != "finetune" or representation != "sae"
            ],
        )
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


def contrastive_figures():
    """One accuracy-vs-noise curve per kind of noise in the sweep."""
    noises = sorted({noise for noise, _ in contrastive_settings()} - {"clean"})
    return expand(out("figures/contrastive/accuracy_vs_{noise}.png"), noise=noises)


def contrastive_targets():
    targets = table_files("contrastive_robustness")
    targets += table_files("contrastive_representations")
    targets += contrastive_figures()
    targets += expand(
        out("contrastive/{representation}/references.png"),
        representation=CONTRASTIVE_REPRESENTATIONS,
    )
    return targets
