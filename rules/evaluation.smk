# PURE stages 6 and 7: semantic distances, alignment with the reference embedder, and
# ground-truth purity; the paper's tables and figures.


# The evaluation's tables (common.smk's table_paths) by name, each its CSV (in the
# report), Markdown and LaTeX files: the outputs evaluate.py writes them to. (`report`
# may not start a line outside a rule: Snakemake would read it as its keyword.)
TABLES_RST = "../workflow/report/tables.rst"
EVALUATION_TABLES = {
    os.path.basename(csv)[:-4]: [report(csv, caption=TABLES_RST, category="Tables")]
    + [csv[:-4] + ".md", csv[:-4] + ".tex"]
    for csv in table_paths()
    if csv.endswith(".csv")
}


# The vocabulary that labels units, in the reference embedder's space: text prompts for
# CLIP with projected pooling, class prototypes for image-only embedders (labels.source).
rule embed_vocabulary:
    input:
        samples=out("data/samples.csv"),
        classes=out("data/classes.json"),
        weights=embedder_weight_input,
    output:
        vocabulary=out("labels/{embedder}.safetensors"),
    log:
        out("logs/embed_vocabulary/{embedder}.log"),
    benchmark:
        out("benchmarks/embed_vocabulary/{embedder}.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        embedder=lambda wildcards: embedder_params(wildcards.embedder),
        labels=section("labels"),
        data=section("data"),
        device=config["device"],
    script:
        "../workflow/scripts/embed_vocabulary.py"


rule evaluate:
    input:
        clusters=expand(
            out("clusters/{method}.safetensors"),
            method=config["clustering"]["methods"],
        ),
        embeddings=expand(out("embeddings/{embedder}.safetensors"), embedder=EMBEDDERS),
        circuits=out("circuits/circuits.safetensors"),
        samples=out("data/samples.csv"),
        hierarchy=out("evaluation/hierarchy.json"),
        sae_metrics=sae_files("metrics.json"),
        sae_embeddings=sae_files(
            f"embeddings/{config['evaluation']['reference']}.safetensors"
        ),
        vocabulary=out(f"labels/{config['evaluation']['reference']}.safetensors"),
        classes=out("data/classes.json"),
        contrastive=contrastive_atlas_inputs(),
    output:
        **EVALUATION_TABLES,
        results=out("evaluation/results.json"),
        # Every unit's references, labels and scores, and its mean reference direction:
        # what the atlas shows and `monoscope search` searches.
        catalogue=out("evaluation/catalogue.json"),
        directions=out("evaluation/directions.safetensors"),
    log:
        out("logs/evaluate.log"),
    benchmark:
        out("benchmarks/evaluate.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        methods=config["clustering"]["methods"],
        ks=config["clustering"]["k"],
        embedders=EMBEDDERS,
        evaluation=section("evaluation", exclude=("embedders",)),
        experiment=config["experiment"],
        hierarchy_k=config["hierarchy"]["k"],
        sae_layers=SAE_LAYERS,
        sae_models=SAE_MODELS,
        labels=section("labels"),
        layer=config["model"]["upper_layer"],
        # Recorded in the catalogue: `monoscope search` embeds its queries with it.
        embedder=embedder_params(config["evaluation"]["reference"]),
    script:
        "../workflow/scripts/evaluate.py"


rule plot_evaluation:
    input:
        results=out("evaluation/results.json"),
    output:
        distances=report(
            out("figures/semantic_distances.png"),
            caption="../workflow/report/semantic_distances.rst",
            category="Evaluation",
        ),
        alignment=report(
            out("figures/alignment.png"),
            caption="../workflow/report/alignment.rst",
            category="Evaluation",
        ),
    log:
        out("logs/plot_evaluation.log"),
    benchmark:
        out("benchmarks/plot_evaluation.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    script:
        "../workflow/scripts/plot_evaluation.py"
