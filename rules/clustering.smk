# PURE stage 3: virtual neurons by k-means, per method (PURE on circuits, the
# activation baseline on activation vectors), and their figures.


rule cluster_units:
    input:
        vectors=cluster_vectors_input,
    output:
        clusters=out("clusters/{method}.safetensors"),
    log:
        out("logs/cluster_units/{method}.log"),
    benchmark:
        out("benchmarks/cluster_units/{method}.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        clustering=section("clustering", exclude=("methods",)),
    script:
        "../workflow/scripts/cluster_units.py"


# One job draws every method's figures (at figures.k): a figure takes less than a job's
# start.
rule plot_virtual_neurons:
    input:
        clusters=expand(
            out("clusters/{method}.safetensors"),
            method=config["clustering"]["methods"],
        ),
        circuits=out("circuits/circuits.safetensors"),
        samples=out("data/samples.csv"),
        classes=out("data/classes.json"),
    output:
        figures=[
            report(
                path,
                caption="../workflow/report/virtual_neurons.rst",
                category="Virtual neurons",
                subcategory=method,
                labels={
                    "method": method,
                    "k": str(config["figures"]["k"]),
                    "neuron": str(neuron),
                },
            )
            for method, neuron, path in virtual_neuron_figures()
        ],
    log:
        out("logs/plot_virtual_neurons.log"),
    benchmark:
        out("benchmarks/plot_virtual_neurons.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        data=section("data"),
        columns=config["figures"]["columns"],
        methods=config["clustering"]["methods"],  # of the clusters, in order
        k=config["figures"]["k"],
        # (method, neuron) of each figure, in order
        figures=[[method, neuron] for method, neuron, _ in virtual_neuron_figures()],
    script:
        "../workflow/scripts/plot_virtual_neurons.py"


rule plot_circuit_umaps:
    input:
        clusters=out("clusters/pure.safetensors"),
        circuits=out("circuits/circuits.safetensors"),
        samples=out("data/samples.csv"),
    output:
        figures=[
            report(
                path,
                caption="../workflow/report/circuit_umap.rst",
                category="Virtual neurons",
                subcategory="UMAP of circuits",
            )
            for path in umap_files()
        ],
    log:
        out("logs/plot_circuit_umaps.log"),
    benchmark:
        out("benchmarks/plot_circuit_umaps.tsv")
    priority: SUBJECT_CHAIN_PRIORITY
    conda:
        ENV
    params:
        data=section("data"),
        k=config["figures"]["k"],
        neurons=config["figures"]["neurons"],
        thumbnails=config["figures"]["thumbnails"],
        seed=config["clustering"]["seed"],
    script:
        "../workflow/scripts/plot_circuit_umaps.py"
