# The unit atlas: a static HTML site of every unit of the catalogue (evaluate's
# evaluation/catalogue.json), labelled and sortable, one page per unit; no server.
# Its helpers: rules/helpers/atlas.smk.


# The top test images of every active dimension of each contrastive representation, in
# the reference embedder's space: those dimensions' units in the catalogue and the atlas.
# One job for every representation: each takes a second after the job's start-up.
rule embed_contrastive_references:
    input:
        contrastive_samples=contrastive_samples(),
        features=expand(
            out("contrastive/{representation}/features.safetensors"),
            representation=CONTRASTIVE_REPRESENTATIONS,
        ),
        weights=embedder_weight_files(config["evaluation"]["reference"]),
    output:
        references=contrastive_atlas_inputs(),
    log:
        out("logs/embed_contrastive_references.log"),
    benchmark:
        out("benchmarks/embed_contrastive_references.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        representations=CONTRASTIVE_REPRESENTATIONS,
        features=[contrastive_features_of(r) for r in CONTRASTIVE_REPRESENTATIONS],
        n=config["atlas"]["references"],
        data=_sorted(CONTRASTIVE["data"]),
        embedder_name=config["evaluation"]["reference"],
        embedder=embedder_params(config["evaluation"]["reference"]),
        device=config["device"],
    script:
        "../workflow/scripts/embed_contrastive_references.py"


rule build_atlas:
    input:
        contrastive_samples=contrastive_samples(),
        catalogue=out("evaluation/catalogue.json"),
        samples=out("data/samples.csv"),
        crops=gather.crops(out("crops/shards/{scatteritem}.safetensors")),
        sae_crops=[
            path
            for layer, sae in SAE_PAIRS
            for path in gather.crops(
                out(f"sae/{layer}/{sae}/crops/{{scatteritem}}.safetensors")
            )
        ],
        # The figures of the figure neurons; not their crops figures, which show what
        # the atlas's own crops and heatmaps show (and would triple its size).
        virtual_figures=[path for _, _, path in virtual_neuron_figures()],
        umaps=umap_files() if "pure" in config["clustering"]["methods"] else [],
        contrastive=contrastive_atlas_inputs(),
    output:
        atlas=report(
            directory(out("atlas")),
            htmlindex="index.html",
            caption="../workflow/report/atlas.rst",
            category="Atlas",
        ),
        size=table_files("atlas"),
    log:
        out("logs/build_atlas.log"),
    benchmark:
        out("benchmarks/build_atlas.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        atlas=section("atlas"),
        data=section("data"),
        upper_layer=config["model"]["upper_layer"],
        figure_neurons=config["figures"]["neurons"],
        figure_k=config["figures"]["k"],
        virtual_figures=[
            (method, neuron) for method, neuron, _ in virtual_neuron_figures()
        ],
        contrastive_data=_sorted(CONTRASTIVE["data"]),
    script:
        "../workflow/scripts/build_atlas.py"
