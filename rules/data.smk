rule record_experiment:
    output:
        record=out("experiment.json"),
    log:
        out("logs/record_experiment.log"),
    benchmark:
        out("benchmarks/record_experiment.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        record=EXPERIMENT_RECORD,
    script:
        "../workflow/scripts/record_experiment.py"


rule prepare_data:
    input:
        root=data_root_input,
    output:
        samples=out("data/samples.csv"),
        classes=out("data/classes.json"),
    log:
        out("logs/prepare_data.log"),
    benchmark:
        out("benchmarks/prepare_data.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        data=section("data"),
    script:
        "../workflow/scripts/prepare_data.py"
