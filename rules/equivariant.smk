# Equivariant SAEs on symmetric data: an image set closed under rotations, base
# autoencoders, the latent symmetry M, vanilla / equivariant / archetypal SAEs, probes.
# Its helpers (constraints, config checks, input functions): rules/helpers/equivariant.smk.


rule prepare_equivariant_data:
    output:
        data=out("equivariant/data/orbits.safetensors"),
        tasks=out("equivariant/data/tasks.json"),
    log:
        out("logs/prepare_equivariant_data.log"),
    benchmark:
        out("benchmarks/prepare_equivariant_data.tsv")
    conda:
        ENV
    params:
        data=_sorted(EQUIVARIANT["data"]),
        tasks=_sorted(EQUIVARIANT["tasks"]),
    script:
        "../workflow/scripts/prepare_equivariant_data.py"


# One job per architecture trains the autoencoder and fits M on its latents: the fit takes
# seconds, less than a job's start. The training checkpoint is kept until the job ends, so
# a job killed during the fit resumes with a finished model and does not train again.
rule train_equivariant_autoencoder:
    input:
        data=out("equivariant/data/orbits.safetensors"),
    output:
        model=out("equivariant/{arch}/autoencoder.safetensors"),
        history=out("equivariant/{arch}/autoencoder.json"),
        latents=out("equivariant/{arch}/latents.safetensors"),
        symmetry=out("equivariant/{arch}/symmetry.safetensors"),
        fit=out("equivariant/{arch}/symmetry.json"),
    log:
        out("logs/train_equivariant_autoencoder/{arch}.log"),
    benchmark:
        out("benchmarks/train_equivariant_autoencoder/{arch}.tsv")
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        autoencoder=_sorted(EQUIVARIANT["autoencoder"]),
        symmetry=_sorted(EQUIVARIANT["symmetry"]),
        # Outside the outputs, so that a killed job resumes from its last epoch.
        checkpoint=lambda wildcards: out(
            f"equivariant/{wildcards.arch}/autoencoder.resume.safetensors"
        ),
        device=config["device"],
    script:
        "../workflow/scripts/train_equivariant_autoencoder.py"


# One job per architecture trains every SAE of its latents in turn: each takes seconds to
# minutes on 256-d latents, about a job's start-up on the demo. Each SAE keeps its own
# resume checkpoint until the job ends, so a killed job's rerun skips the SAEs it finished
# and resumes the one it was training.
rule train_equivariant_saes:
    input:
        data=out("equivariant/data/orbits.safetensors"),
        latents=out("equivariant/{arch}/latents.safetensors"),
        symmetry=out("equivariant/{arch}/symmetry.safetensors"),
    output:
        models=expand(
            out("equivariant/{{arch}}/sae/{sae}/model.safetensors"),
            sae=[f"{family}/{loss}" for family, loss in equivariant_saes()],
        ),
        metrics=expand(
            out("equivariant/{{arch}}/sae/{sae}/metrics.json"),
            sae=[f"{family}/{loss}" for family, loss in equivariant_saes()],
        ),
    log:
        out("logs/train_equivariant_saes/{arch}.log"),
    benchmark:
        out("benchmarks/train_equivariant_saes/{arch}.tsv")
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        torch_threads=config["threads"],  # fixed: results depend on it
        sae=_sorted(EQUIVARIANT["sae"]),
        saes=equivariant_saes(),
        checkpoints=lambda wildcards: [
            out(f"equivariant/{wildcards.arch}/sae/{family}/{loss}/resume.safetensors")
            for family, loss in equivariant_saes()
        ],
        device=config["device"],
    script:
        "../workflow/scripts/train_equivariant_saes.py"


# One job per architecture probes its base latents and every SAE: a probe set fits many
# small single-threaded models in seconds, less than a job's start.
rule probe_equivariant:
    input:
        data=out("equivariant/data/orbits.safetensors"),
        latents=out("equivariant/{arch}/latents.safetensors"),
        saes=expand(
            out("equivariant/{{arch}}/sae/{sae}/model.safetensors"),
            sae=[f"{family}/{loss}" for family, loss in equivariant_saes()],
        ),
    output:
        probes=expand(
            out("equivariant/{{arch}}/probes/{probed}.csv"),
            probed=[f"{family}/{loss}" for family, loss in equivariant_probed()],
        ),
    log:
        out("logs/probe_equivariant/{arch}.log"),
    benchmark:
        out("benchmarks/probe_equivariant/{arch}.tsv")
    conda:
        ENV
    params:
        probes=_sorted(EQUIVARIANT["probes"]),
        probed=equivariant_probed(),
    script:
        "../workflow/scripts/probe_equivariant.py"


rule equivariant_tables:
    input:
        probes=equivariant_probe_files(),
        metrics=equivariant_files("metrics.json"),
        symmetry=expand(
            out("equivariant/{arch}/symmetry.json"), arch=EQUIVARIANT["architectures"]
        ),
        tasks=out("equivariant/data/tasks.json"),
    output:
        **{
            table: report(
                table_files(f"equivariant_{table}"),
                caption="../workflow/report/equivariant_tables.rst",
                category="Tables",
            )
            for table in EQUIVARIANT_TABLES
        },
    log:
        out("logs/equivariant_tables.log"),
    benchmark:
        out("benchmarks/equivariant_tables.tsv")
    conda:
        ENV
    params:
        architectures=EQUIVARIANT["architectures"],
    script:
        "../workflow/scripts/equivariant_tables.py"
