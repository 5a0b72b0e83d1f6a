# fruits-pipeline: `make demo` runs the pipeline locally, `make test` runs the tests,
# `make ui` starts Airflow's UI with the DAG loaded, `make bench` measures speed.
# Everything is installed into .venv on first use; no cloud account, no Docker.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov (infra scan) in a venv of its own: its pins would fight Airflow's
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONPATH := $(abspath plugins):$(abspath spark_jobs)
# Keep Spark and everything it starts on loopback.
export SPARK_LOCAL_IP := 127.0.0.1

.PHONY: venv tools weights stage-weights jvm-archive check-java system-deps check test lint demo ui bench aws-smoke clean dist dist-check
.PHONY: stage-wheels serverless-archive node-check bench-scale bench-precision

venv: $(STAMP)

# requirements/dev.txt includes Airflow's (requirements/airflow.txt), which includes the
# jobs' (spark_jobs/requirements.txt); constraints.txt locks them together.
$(STAMP): requirements/dev.txt requirements/airflow.txt requirements/convert.txt spark_jobs/requirements.txt constraints.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt -c constraints.txt
	@touch $(STAMP)

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): infra/tools-requirements.txt
	@test -d $(TOOLS) || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r infra/tools-requirements.txt
	@touch $(TOOLS_STAMP)

# Real ImageNet weights for MobileNet v1, offline: fetched once (pip, checksums) and
# converted into Keras' cache (fruits/dev/imagenet_mobilenet.py); a no-op when done.
weights: venv
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m fruits.dev.imagenet_mobilenet

# The ImageNet weights in Keras' cache, to s3://$(FRUITS_BUCKET)/models/<model>/ for the
# emr and ec2 backends (fruits/dev/stage_weights.py; your shell's AWS credentials);
# unchanged objects are skipped. MODELS="mobilenet vgg16" limits it (default: all cached).
# It also converts each model for the cloud nodes (models/<key>.tflite; TensorFlow runs
# here): SIZES="224 128" (default: FRUITS_IMAGE_SIZE, else 224); WEIGHTS=random|s3://...h5
# converts other weights (docs/weights.md).
stage-weights: venv
	$(BIN)/python -m fruits.dev.stage_weights $(if $(FRUITS_BUCKET),--bucket $(FRUITS_BUCKET)) $(if $(MODELS),--models $(MODELS)) $(if $(SIZES),--image-sizes $(SIZES)) $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(PRECISIONS),--precisions $(PRECISIONS))

# The cluster nodes' wheels (emr and ec2 requirement sets, x86_64 and arm64), downloaded
# once into dist/wheels/ (pip download --only-binary, the nodes' platform tags, constraints.txt;
# pyspark's wheel built from its sdist) and staged to s3://$(FRUITS_BUCKET)/wheels/<hash>/<arch>/
# for the nodes' offline install (fruits/dev/stage_wheels.py; your shell's AWS credentials,
# AWS_ENDPOINT_URL for MinIO or moto); done steps are skipped. ARCH="arm64" limits it.
# Downloads: not part of make test.
stage-wheels: venv
	$(BIN)/python -m fruits.dev.stage_wheels $(if $(FRUITS_BUCKET),--bucket $(FRUITS_BUCKET)) $(if $(ARCH),--arch $(ARCH)) $(if $(AWS_ENDPOINT_URL),--endpoint-url $(AWS_ENDPOINT_URL))

# The serverless jobs' Python archive (CPython 3.11 and the jobs' pins, built in Amazon Linux
# 2023 from the wheels `make stage-wheels` downloaded: clusters/serverless/archive/Dockerfile),
# for both arches, uploaded beside those wheels (fruits/dev/serverless_archive.py). Needs
# Docker (buildx) and CPython's source release: PYTHON_SOURCE=/path/Python-3.11.<n>.tgz.
# Untested here (no Docker daemon); not part of make test. ARCH="ARM64" limits it.
serverless-archive: venv
	$(BIN)/python -m fruits.dev.serverless_archive --python-source $(PYTHON_SOURCE) $(if $(FRUITS_BUCKET),--bucket $(FRUITS_BUCKET)) $(if $(ARCH),--arch $(ARCH)) $(if $(AWS_ENDPOINT_URL),--endpoint-url $(AWS_ENDPOINT_URL))

# What a node gets, tried here (fruits/dev/node_check.py): the wheels for both arches, a fresh
# venv with the x86_64 ec2 set installed offline, featurize through its spark-submit on a
# converted model, no TensorFlow there; sizes and install times against the requirement set
# that had TensorFlow. Downloads: not part of make test.
node-check: venv check-java
	$(BIN)/python -m fruits.dev.node_check

# Spark's classes in one class-data-sharing archive, made once per Java and Spark install
# (plugins/fruits/clusters/local/jvm_archive.py): every Spark JVM we start maps it; a no-op when made.
jvm-archive: venv check-java
	$(BIN)/python -m fruits.dev.make_jvm_archive

check-java:
	@command -v java >/dev/null || { echo "Java 17+ is required by Spark: apt-get install openjdk-17-jre-headless" >&2; exit 1; }

system-deps:
	@bash scripts/system-deps.sh

# The fast tier while working: no Spark, no Airflow database, no spark-submit, no
# cluster processes, no browser (tests/conftest.py marks them); a few minutes.
check: venv tools weights
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m fast

# Every test (the README's test command; CI runs it), on TEST_WORKERS processes: each
# takes whole files (module fixtures stay shared), the heaviest first (tests/conftest.py),
# so the short files fill in around the long ones. The long tests are busy on the CPU,
# not waiting: more workers than cores would not finish sooner.
TEST_WORKERS ?= 2
test: venv tools weights system-deps check-java jvm-archive
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: venv weights check-java jvm-archive
	bash scripts/demo.sh

ui: venv weights check-java jvm-archive
	bash scripts/ui.sh

bench: venv check-java jvm-archive
	$(BIN)/python -m bench.run

# precision=int8 against fp32 (docs/precision.md): MobileNet v1 with its real weights, the
# shipped (fp32) job and the int8 one beside raw Keras and raw LiteRT; IMAGES=20000 for the
# issue's whole-process figure (default 3,000).
bench-precision: venv check-java jvm-archive weights
	$(BIN)/python -m bench.run --models mobilenet --weights imagenet --variants shipped,int8 --no-scaling --no-reduce --no-progress-cost $(if $(IMAGES),--images $(IMAGES)) --json bench/results-int8.json

# The DAG end to end on the local backend at Fruits-360 sizes (10k, 30k, 90k images) and
# small daily batches; by hand only, never part of `make test`: hours on 2 cores.
# ARGS="--sizes 300,600 --backfill-days 2 --backfill-images 200 --image-size 96" (bench/scale/).
bench-scale: venv check-java jvm-archive weights
	$(BIN)/python -m bench.scale $(ARGS)

# Opt-in, never part of `make test`: one tiny batch through the DAG on YOUR AWS account
# (it costs money), then a look for leftovers and a report to paste into an issue. Needs
# FRUITS_COMPUTE=emr|ec2, FRUITS_BUCKET, a region and the backend's subnet settings; it
# states the cost and asks first. ARGS="--yes --weights random" (fruits/dev/aws_smoke.py).
aws-smoke: venv
	$(BIN)/python -m fruits.dev.aws_smoke $(ARGS)

# One bundle per platform from the same sources (bundles/build.py, docs/bundles.md):
# dist/mwaa (dags/, plugins.zip, requirements.txt, startup.sh) and dist/image (a Dockerfile
# on the official Airflow image). tests/dist checks them; dist-check installs one.
dist: venv
	$(BIN)/python -m bundles.build dist

# A fresh virtualenv (dist/check-venv) with the pinned Airflow and the MWAA bundle's
# requirements.txt, then the DAG parsed there from an MWAA-like layout; prints sizes.
# Downloads packages: not part of make test.
dist-check: dist
	$(BIN)/python -m bundles.check dist

clean:
	rm -rf var build dist .pytest_cache .ruff_cache
