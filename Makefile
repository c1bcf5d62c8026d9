# llama-train: the two commands of the quick start are `make demo` and `make test`.
# Every target installs what it needs first (Debian packages, idempotently), so a fresh machine works.

SWIFT ?= swift
APT_PACKAGES := libopenmpi-dev openmpi-bin libopenblas-dev libdnnl-dev zlib1g-dev libzstd-dev libsnappy-dev zstd pkg-config python3-pip fortunes iproute2 procps time munge slurmctld slurmd slurm-client
# The tokenizer tests compare against the sentencepiece library itself; the Parquet tests read files pyarrow writes.
PIP_PACKAGES := sentencepiece==0.2.3 pyarrow==25.0.1
BIN := .build/release/llama-train

# OpenMPI refuses to run as root without these; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: all deps build test lint format bench bench-precision demo clean

all: build

deps:
	@scripts/install-deps.sh $(APT_PACKAGES)
	@scripts/install-python-deps.sh $(PIP_PACKAGES)

build: deps
	$(SWIFT) build -c release

# Debug build for the Swift side; the C kernels are always compiled with -O3 (see Package.swift). The lint runs
# first: a tree that `make format` would change fails.
test: deps lint
	$(SWIFT) build --build-tests
	$(SWIFT) test

# swift format ships with the toolchain; .swift-format holds the configuration (4 spaces, 120 columns).
FORMATTED := Package.swift Sources Tests
lint:
	$(SWIFT) format lint --strict --recursive $(FORMATTED)

format:
	$(SWIFT) format --in-place --recursive $(FORMATTED)

# Timed runs live here, never in `make test`. RUNS repeats the step benchmark and reports medians.
RUNS ?= 5
THREADS ?= 1
bench: build
	scripts/bench-step.sh $(BIN) configs/bench-small.json $(THREADS) $(RUNS)
	scripts/bench-step.sh $(BIN) configs/bench-2048.json $(THREADS) 3
	scripts/bench-pytorch.sh $(BIN) configs/bench-small.json 5 $(THREADS)
	scripts/bench-pytorch.sh $(BIN) configs/bench-2048.json 3 $(THREADS)
	$(BIN) bench --attention --seq 2048 --steps 3
	scripts/bench-tokenizer.sh $(BIN) 8000
	scripts/bench-tokenizer-train.sh $(BIN) 32000 3
	scripts/bench-prepare.sh $(BIN) 100 400
	scripts/bench-prepare-parquet.sh $(BIN) 400 3 16
	scripts/bench-loader.sh $(BIN)
	for mode in none optimizer gradients full; do SHARDING=$$mode scripts/bench-ddp.sh $(BIN) configs/bench-small.json 2; done
	scripts/bench-tinyllama.sh $(BIN)
	scripts/bench-tinyllama-roundtrip.sh $(BIN)
	scripts/bench-startup.sh $(BIN)
	scripts/bench-checkpoint.sh $(BIN) configs/bench-small.json
	scripts/bench-preemption.sh $(BIN)
	scripts/bench-decode.sh $(BIN)
	scripts/bench-ppo.sh $(BIN) 4
	@if [ "$$(id -u)" -eq 0 ]; then scripts/bench-slurm-timelimit.sh $(BIN); \
	else echo "skipping the Slurm time-limit benchmark: its daemons need root"; fi
	@if [ "$$(id -u)" -eq 0 ]; then BIN=$(BIN) RATE=200mbit RANKS="2 3 4" MODES="none optimizer gradients full full-noprefetch" STEPS=10 REPEATS=3 cluster/lab-scaling.sh && \
		$(BIN) plan --simulate --calibration runs/lab-scaling/lab.json --configs configs/lab-8blocks.json --max-ranks 4; \
	else echo "skipping the rate-limited network lab (cluster/lab-scaling.sh): it needs root for network namespaces"; fi

# The main job on the built-in corpus: tokenizer, shards, pretraining under mpirun -np 2, chart, samples.
demo: build
	scripts/demo.sh $(BIN)

# bf16 against fp32 learning on the demo's data (after `make demo`): 150 steps on 2 ranks each.
bench-precision: build
	scripts/bench-precision-learning.sh $(BIN) 150

clean:
	rm -rf .build
