# Non-negative contrastive learning and its robustness: SimCLR and NCL pretraining, an
# SAE on frozen SimCLR features, probes in clean and noisy settings, tables and curves.
# Its helpers (constraints, config checks, input functions): rules/helpers/contrastive.smk.


# The digits' split, drawn once: every job below reads it (contrastive_samples()).
rule prepare_contrastive_data:
    output:
        samples=out("contrastive/data/samples.csv"),
    log:
        out("logs/prepare_contrastive_data.log"),
    benchmark:
        out("benchmarks/prepare_contrastive_data.tsv")
    conda:
        ENV
    params:
        data=_sorted(CONTRASTIVE["data"]),
    script:
        "../workflow/scripts/prepare_contrastive_data.py"


rule pretrain_contrastive:
    input:
        contrastive_samples=contrastive_samples(),
    output:
        model=out("contrastive/pretrain/{method}/model.safetensors"),
        history=out("contrastive/pretrain/{method}/training.json"),
    log:
        out("logs/pretrain_contrastive/{method}.log"),
    benchmark:
        out("benchmarks/pretrain_contrastive/{method}.tsv")
    wildcard_constraints:
        method="simclr|ncl",
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=_sorted(CONTRASTIVE["data"]),
        pretrain=_sorted(CONTRASTIVE["pretrain"]),
        # Outside the outputs, so that a killed job resumes from its last epoch.
        checkpoint=lambda wildcards: out(
            f"contrastive/pretrain/{wildcards.method}/resume.safetensors"
        ),
        device=config["device"],
    script:
        "../workflow/scripts/pretrain_contrastive.py"


rule train_contrastive_sae:
    input:
        contrastive_samples=contrastive_samples(),
        model=out("contrastive/pretrain/simclr/model.safetensors"),
    output:
        model=out("contrastive/sae/model.safetensors"),
        history=out("contrastive/sae/training.json"),
    log:
        out("logs/train_contrastive_sae.log"),
    benchmark:
        out("benchmarks/train_contrastive_sae.tsv")
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=_sorted(CONTRASTIVE["data"]),
        sae=_sorted(CONTRASTIVE["sae"]),
        batch_size=CONTRASTIVE["extract_batch_size"],
        checkpoint=out("contrastive/sae/resume.safetensors"),
        device=config["device"],
    script:
        "../workflow/scripts/train_contrastive_sae.py"


rule contrastive_features:
    input:
        unpack(contrastive_model_inputs),
        contrastive_samples=contrastive_samples(),
    output:
        features=out("contrastive/{representation}/features.safetensors"),
        units=out("contrastive/{representation}/units.json"),
        references=report(
            out("contrastive/{representation}/references.png"),
            caption="../workflow/report/contrastive_references.rst",
            category="Contrastive",
        ),
    log:
        out("logs/contrastive_features/{representation}.log"),
    benchmark:
        out("benchmarks/contrastive_features/{representation}.tsv")
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=_sorted(CONTRASTIVE["data"]),
        which=lambda wildcards: (
            "projector"
            if wildcards.representation == "sae"
            else CONTRASTIVE["features"]
        ),
        batch_size=CONTRASTIVE["extract_batch_size"],
        hierarchy=_sorted(CONTRASTIVE["hierarchy"]),
        references=_sorted(CONTRASTIVE["references"]),
        device=config["device"],
    script:
        "../workflow/scripts/contrastive_features.py"


# Finetuning is the costly probe (a whole backbone per setting), yet on the demo a setting
# takes seconds, about as long as a job's start (importing torch): one job per
# representation runs every setting, as contrastive_frozen_probes does for the frozen
# probes. Each setting draws from generators seeded from the params, so its result does
# not depend on the settings run before it in the job.
rule contrastive_finetune:
    input:
        unpack(contrastive_model_inputs),
        contrastive_samples=contrastive_samples(),
        features=out("contrastive/{representation}/features.safetensors"),
    output:
        probes=contrastive_probe_outputs("{representation}", ["finetune"]),
    log:
        out("logs/contrastive_finetune/{representation}.log"),
    benchmark:
        out("benchmarks/contrastive_finetune/{representation}.tsv")
    wildcard_constraints:
        representation="simclr|ncl",  # the SAE needs a frozen backbone
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=_sorted(CONTRASTIVE["data"]),
        # No linear-probe settings: a change to them must not rerun finetuning.
        which=CONTRASTIVE["features"],
        finetune=_sorted(CONTRASTIVE["finetune"]),
        batch_size=CONTRASTIVE["extract_batch_size"],
        seed=CONTRASTIVE["robustness"]["seed"],
        probes=["finetune"],
        settings=contrastive_settings(),
        device=config["device"],
    script:
        "../workflow/scripts/contrastive_probe.py"


rule contrastive_frozen_probes:
    input:
        unpack(contrastive_model_inputs),
        contrastive_samples=contrastive_samples(),
        features=out("contrastive/{representation}/features.safetensors"),
    output:
        probes=contrastive_probe_outputs("{representation}", CONTRASTIVE_FROZEN_PROBES),
    log:
        out("logs/contrastive_frozen_probes/{representation}.log"),
    benchmark:
        out("benchmarks/contrastive_frozen_probes/{representation}.tsv")
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        data=_sorted(CONTRASTIVE["data"]),
        which=lambda wildcards: (
            "projector"
            if wildcards.representation == "sae"
            else CONTRASTIVE["features"]
        ),
        linear=_sorted(CONTRASTIVE["linear"]),
        selected_dims=CONTRASTIVE["selected"]["dims"],
        batch_size=CONTRASTIVE["extract_batch_size"],
        seed=CONTRASTIVE["robustness"]["seed"],
        probes=CONTRASTIVE_FROZEN_PROBES,
        settings=contrastive_settings(),
        device=config["device"],
    script:
        "../workflow/scripts/contrastive_probe.py"


rule contrastive_tables:
    input:
        probes=contrastive_probe_files(),
        units=expand(
            out("contrastive/{representation}/units.json"),
            representation=CONTRASTIVE_REPRESENTATIONS,
        ),
    output:
        robustness=report(
            table_files("contrastive_robustness"),
            caption="../workflow/report/contrastive_tables.rst",
            category="Tables",
        ),
        representations=report(
            table_files("contrastive_representations"),
            caption="../workflow/report/contrastive_tables.rst",
            category="Tables",
        ),
        figures=report(
            contrastive_figures(),
            caption="../workflow/report/contrastive_curves.rst",
            category="Contrastive",
        ),
    log:
        out("logs/contrastive_tables.log"),
    benchmark:
        out("benchmarks/contrastive_tables.tsv")
    conda:
        ENV
    params:
        settings=[(noise, float(level)) for noise, level in contrastive_settings()],
    script:
        "../workflow/scripts/contrastive_tables.py"
