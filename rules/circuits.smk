# PURE stage 2: circuits of every (neuron, reference) pair, sharded over neuron ranges.


rule compute_circuits:
    input:
        references=out("references/references.safetensors"),
        samples=out("data/samples.csv"),
        model=subject_model_file(),
    output:
        circuits=out("circuits/shards/{scatteritem}.safetensors"),
    log:
        out("logs/compute_circuits/{scatteritem}.log"),
    benchmark:
        out("benchmarks/compute_circuits/{scatteritem}.tsv")
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
        lower_layer=config["model"]["lower_layer"],
        upper_layer=config["model"]["upper_layer"],
        reference_mode=config["circuits"]["references"],
        neurons=config["neurons"],
        circuits=section("circuits", exclude=("shards", "references")),
        device=config["device"],
    script:
        "../workflow/scripts/compute_circuits.py"


rule merge_circuits:
    input:
        shards=gather.circuits(out("circuits/shards/{scatteritem}.safetensors")),
    output:
        circuits=out("circuits/circuits.safetensors"),
    log:
        out("logs/merge_circuits.log"),
    benchmark:
        out("benchmarks/merge_circuits.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    script:
        "../workflow/scripts/merge_circuits.py"
