# Helpers of rules/atlas.smk and of evaluate's catalogue: the contrastive branch's units.


def contrastive_atlas_inputs():
    """The contrastive dimensions' references, when that branch runs beside PURE."""
    if "contrastive" not in BRANCHES or "pure" not in BRANCHES:
        return []
    return expand(
        out("contrastive/{representation}/atlas_references.safetensors"),
        representation=CONTRASTIVE_REPRESENTATIONS,
    )


def contrastive_features_of(representation):
    """What a representation's dimensions are: the SAE's codes or the model's features."""
    return "projector" if representation == "sae" else CONTRASTIVE["features"]


def crop_heatmap_size():
    """Side of the heatmap thumbnails the crop jobs keep for the atlas (0: none), so that
    build_atlas needs no LRP pass of its own."""
    atlas = config["atlas"]
    return atlas["thumbnail"] if atlas["heatmaps"] else 0
