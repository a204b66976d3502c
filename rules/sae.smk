# Dictionary learning: pooled activations streamed to disk, SAEs trained on them, and
# SAE features made units (references, crops, embeddings) for the shared evaluation.
# Its helpers (constraints, config checks, input functions): rules/helpers/sae.smk.


rule collect_activations:
    input:
        samples=out("data/samples.csv"),
        model=subject_model_file(),
    output:
        activations=expand(
            out("activations/{layer}/{{scatteritem}}.safetensors"),
            layer=ACTIVATION_LAYERS,
        ),
    log:
        out("logs/collect_activations/{scatteritem}.log"),
    benchmark:
        out("benchmarks/collect_activations/{scatteritem}.tsv")
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
        layers=ACTIVATION_LAYERS,
        activations=section("activations", exclude=("shards",)),
        device=config["device"],
    script:
        "../workflow/scripts/collect_activations.py"


rule train_sae:
    input:
        activations=gather.activations(
            out("activations/{{layer}}/{scatteritem}.safetensors")
        ),
    output:
        model=out("sae/{layer}/{sae}/model.safetensors"),
        history=out("sae/{layer}/{sae}/training.json"),
    log:
        out("logs/train_sae/{layer}/{sae}.log"),
    benchmark:
        out("benchmarks/train_sae/{layer}/{sae}.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        sae=lambda wildcards: _sorted(config["sae"]["models"][wildcards.sae]),
        # Outside the outputs, so that a killed job resumes from its last epoch.
        checkpoint=lambda wildcards: out(
            f"sae/{wildcards.layer}/{wildcards.sae}/resume.safetensors"
        ),
        device=config["device"],
    script:
        "../workflow/scripts/train_sae.py"


rule sae_units:
    input:
        sae=out("sae/{layer}/{sae}/model.safetensors"),
        activations=gather.activations(
            out("activations/{{layer}}/{scatteritem}.safetensors")
        ),
        samples=out("data/samples.csv"),
        model=subject_model_file(),
    output:
        references=out("sae/{layer}/{sae}/references.safetensors"),
        metrics=out("sae/{layer}/{sae}/metrics.json"),
    log:
        out("logs/sae_units/{layer}/{sae}.log"),
    benchmark:
        out("benchmarks/sae_units/{layer}/{sae}.tsv")
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
        n=config["references"]["n"],
        pooling=config["activations"]["pooling"],
        max_units=config["sae"]["max_units"],
        batch_size=config["sae"]["metrics_batch_size"],
        device=config["device"],
    script:
        "../workflow/scripts/sae_units.py"


rule render_sae_crops:
    input:
        sae=out("sae/{layer}/{sae}/model.safetensors"),
        references=out("sae/{layer}/{sae}/references.safetensors"),
        samples=out("data/samples.csv"),
        model=subject_model_file(),
    output:
        crops=out("sae/{layer}/{sae}/crops/{scatteritem}.safetensors"),
    log:
        out("logs/render_sae_crops/{layer}/{sae}/{scatteritem}.log"),
    benchmark:
        out("benchmarks/render_sae_crops/{layer}/{sae}/{scatteritem}.tsv")
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
        crops=section("crops", exclude=("shards", "size")),
        heatmap_size=crop_heatmap_size(),
        device=config["device"],
    script:
        "../workflow/scripts/render_sae_crops.py"


use rule embed_crops as embed_sae_crops with:
    input:
        crops=out("sae/{layer}/{sae}/crops/{scatteritem}.safetensors"),
        samples=out("data/samples.csv"),
        weights=embedder_weight_input,
    output:
        embeddings=out(
            "sae/{layer}/{sae}/embeddings/{embedder}/{scatteritem}.safetensors"
        ),
    log:
        out("logs/embed_sae_crops/{layer}/{sae}/{embedder}/{scatteritem}.log"),
    benchmark:
        out("benchmarks/embed_sae_crops/{layer}/{sae}/{embedder}/{scatteritem}.tsv")


use rule merge_embeddings as merge_sae_embeddings with:
    input:
        shards=gather.crops(
            out(
                "sae/{{layer}}/{{sae}}/embeddings/{{embedder}}/{scatteritem}.safetensors"
            )
        ),
        references=out("sae/{layer}/{sae}/references.safetensors"),
    output:
        embeddings=out("sae/{layer}/{sae}/embeddings/{embedder}.safetensors"),
    log:
        out("logs/merge_sae_embeddings/{layer}/{sae}/{embedder}.log"),
    benchmark:
        out("benchmarks/merge_sae_embeddings/{layer}/{sae}/{embedder}.tsv")


rule score_hierarchy:
    input:
        unpack(hierarchy_inputs),
    output:
        hierarchy=out("evaluation/hierarchy.json"),
    log:
        out("logs/score_hierarchy.log"),
    benchmark:
        out("benchmarks/score_hierarchy.tsv")
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
        hierarchy=section("hierarchy"),
        lower_layer=config["model"]["lower_layer"],
        upper_layer=config["model"]["upper_layer"],
        circuits=section("circuits", exclude=("shards", "references")),
        sae_layers=SAE_LAYERS,
        sae_models=SAE_MODELS,
        device=config["device"],
    script:
        "../workflow/scripts/score_hierarchy.py"
