# PURE stages 6 and 7: semantic distances, alignment with the reference embedder, and
# ground-truth purity; the paper's tables and figures.


def evaluation_tables():
    """The evaluation's tables (common.smk's table_paths) by name: each a list of its
    CSV (in the report), Markdown and LaTeX files."""
    tables = {}
    for path in table_paths():
        name = os.path.splitext(os.path.basename(path))[0]
        if path.endswith(".csv"):  # a line may not start with `report` outside a rule
            path = report(
                path, caption="../workflow/report/tables.rst", category="Tables"
            )
        tables.setdefault(name, []).append(path)
    return tables


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
    output:
        **evaluation_tables(),
        results=out("evaluation/results.json"),
    log:
        out("logs/evaluate.log"),
    benchmark:
        out("benchmarks/evaluate.tsv")
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
    conda:
        ENV
    script:
        "../workflow/scripts/plot_evaluation.py"
