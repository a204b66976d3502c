# PURE stages 4 and 5: relevance-cropped references and their embeddings, sharded
# over neuron ranges. Crop files hold the boxes (and the atlas's heatmap thumbnails,
# sized by atlas.thumbnail), not pixels; the rules that need pixels cut them from the
# data set (data params, sample table, crops.size), so the boxes do not depend on
# crops.size and changing it reruns only the embeddings and figures.


rule render_crops:
    input:
        references=out("references/references.safetensors"),
        samples=out("data/samples.csv"),
        model=subject_model_file(),
    output:
        crops=out("crops/shards/{scatteritem}.safetensors"),
    log:
        out("logs/render_crops/{scatteritem}.log"),
    benchmark:
        out("benchmarks/render_crops/{scatteritem}.tsv")
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
        upper_layer=config["model"]["upper_layer"],
        reference_mode=config["circuits"]["references"],
        neurons=config["neurons"],
        crops=section("crops", exclude=("shards", "size")),
        heatmap_size=crop_heatmap_size(),
        device=config["device"],
    script:
        "../workflow/scripts/render_crops.py"


# One job draws every figure neuron's crops: a figure takes less than a job's start.
rule plot_crops:
    input:
        crops=gather.crops(out("crops/shards/{scatteritem}.safetensors")),
        samples=out("data/samples.csv"),
    output:
        figures=[
            report(
                out(f"figures/crops/neuron{neuron}.png"),
                caption="../workflow/report/crops.rst",
                category="Crops",
                labels={"neuron": str(neuron)},
            )
            for neuron in config["figures"]["neurons"]
        ],
    log:
        out("logs/plot_crops.log"),
    benchmark:
        out("benchmarks/plot_crops.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        columns=config["figures"]["columns"],
        data=section("data"),
        neurons=config["figures"]["neurons"],
        size=config["crops"]["size"],
    script:
        "../workflow/scripts/plot_crops.py"


rule embed_crops:
    input:
        crops=out("crops/shards/{scatteritem}.safetensors"),
        samples=out("data/samples.csv"),
        weights=embedder_weight_input,
    output:
        embeddings=out("embeddings/{embedder}/{scatteritem}.safetensors"),
    log:
        out("logs/embed_crops/{embedder}/{scatteritem}.log"),
    benchmark:
        out("benchmarks/embed_crops/{embedder}/{scatteritem}.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        embedder=lambda wildcards: embedder_params(wildcards.embedder),
        data=section("data"),
        size=config["crops"]["size"],
        device=config["device"],
    script:
        "../workflow/scripts/embed_crops.py"


rule merge_embeddings:
    input:
        shards=gather.crops(out("embeddings/{{embedder}}/{scatteritem}.safetensors")),
    output:
        embeddings=out("embeddings/{embedder}.safetensors"),
    log:
        out("logs/merge_embeddings/{embedder}.log"),
    benchmark:
        out("benchmarks/merge_embeddings/{embedder}.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    script:
        "../workflow/scripts/merge_embeddings.py"
