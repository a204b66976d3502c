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
        **EVALUATION_TABLES,
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
