# PURE stage 1: top-N reference samples of every channel, sharded over the data set.


rule collect_references:
    input:
        samples=out("data/samples.csv"),
        model=subject_model_file(),
    output:
        references=out("references/shards/{scatteritem}.safetensors"),
    log:
        out("logs/collect_references/{scatteritem}.log"),
    benchmark:
        out("benchmarks/collect_references/{scatteritem}.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=section("data"),
        model=model_params(),
        layers=REFERENCE_LAYERS,
        references=section("references", exclude=("shards", "grid", "layers")),
        device=config["device"],
    script:
        "../workflow/scripts/collect_references.py"


rule merge_references:
    input:
        shards=gather.references(out("references/shards/{scatteritem}.safetensors")),
    output:
        references=out("references/references.safetensors"),
    log:
        out("logs/merge_references.log"),
    benchmark:
        out("benchmarks/merge_references.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        n=config["references"]["n"],
    script:
        "../workflow/scripts/merge_references.py"


# One job draws every grid (each mode and layer): a grid takes less than a job's start.
rule plot_references:
    input:
        references=out("references/references.safetensors"),
        samples=out("data/samples.csv"),
        classes=out("data/classes.json"),
    output:
        grids=[
            report(
                path,
                caption="../workflow/report/references_grid.rst",
                category="References",
                subcategory=layer,
                labels={"mode": mode, "layer": layer},
            )
            for mode, layer, path in reference_grid_figures()
        ],
    log:
        out("logs/plot_references.log"),
    benchmark:
        out("benchmarks/plot_references.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        data=section("data"),
        grid=_sorted(config["references"]["grid"]),
        # (mode, layer) of each grid, in order
        grids=[[mode, layer] for mode, layer, _ in reference_grid_figures()],
        upper_layer=config["model"]["upper_layer"],
        neurons=config["neurons"],
        reference_mode=config["circuits"]["references"],
    script:
        "../workflow/scripts/plot_references.py"
