rule train_subject:
    input:
        samples=out("data/samples.csv"),
    output:
        model=out("models/subject.safetensors"),
        metrics=report(
            out("models/subject_metrics.json"),
            caption="../workflow/report/subject_metrics.rst",
            category="Models",
        ),
    log:
        out("logs/train_subject.log"),
    benchmark:
        out("benchmarks/train_subject.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=section("data"),
        train=section("demo", exclude=("judge",)),
        device=config["device"],
    script:
        "../workflow/scripts/train_demo.py"


rule train_judge:
    input:
        samples=out("data/samples.csv"),
    output:
        model=out("models/judge.safetensors"),
        metrics=out("models/judge_metrics.json"),
    log:
        out("logs/train_judge.log"),
    benchmark:
        out("benchmarks/train_judge.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=section("data"),
        train=_sorted(
            section("demo", exclude=("judge", "label_groups"))
            | config["demo"]["judge"]
        ),
        device=config["device"],
    script:
        "../workflow/scripts/train_demo.py"


rule check_weights:
    input:
        weights=weight_file_input,
    output:
        check=out("models/subject_check.json"),
    log:
        out("logs/check_weights.log"),
    benchmark:
        out("benchmarks/check_weights.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        model=model_params(),
        layers=[config["model"]["upper_layer"], config["model"]["lower_layer"]],
        image_size=config["data"]["image_size"],
    script:
        "../workflow/scripts/check_weights.py"
