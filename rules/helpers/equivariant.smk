# Helpers of rules/equivariant.smk: wildcard constraints, cross-key config checks, input
# functions and targets.


# Constraints that list names repeat the library's; tests/test_allowed_values.py
# compares them.
wildcard_constraints:
    arch="mlp|cnn|vit",
    family="base|vanilla|equivariant|archetypal",
    loss="none|mse|latent_inv|canonical|output_inv",


EQUIVARIANT = config["equivariant"]

# Cross-key checks the schema cannot express; they fail before any job starts (data
# roots: monoscope.preflight.check_config, run by common.smk).
if "cnn" in EQUIVARIANT["architectures"] and EQUIVARIANT["data"]["image_size"] % 8:
    raise ValueError(
        f"equivariant.data.image_size ({EQUIVARIANT['data']['image_size']}) must be a "
        "multiple of 8 for the cnn autoencoder"
    )


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


def equivariant_probed():
    """(family, loss) of what each architecture's probe job probes: its base latents,
    then every SAE, in the order of its outputs."""
    return [("base", "none")] + equivariant_saes()


def equivariant_probe_files():
    """Probe results of the base latents and of every SAE, per architecture."""
    return [
        out(f"equivariant/{arch}/probes/{family}/{loss}.csv")
        for arch in EQUIVARIANT["architectures"]
        for family, loss in equivariant_probed()
    ]


EQUIVARIANT_TABLES = ["probes", "probes_invariant", "reconstruction", "symmetry"]


def equivariant_targets():
    return [
        path
        for table in EQUIVARIANT_TABLES
        for path in table_files(f"equivariant_{table}")
    ]
