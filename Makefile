# tritonrag: `make demo` runs it from nothing, `make test` tests it from nothing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
MODEL := model_repository/cpu/embed/1/variant.json
MODEL_SOURCES := $(wildcard export/*.py) orchestrator/encoder.py model_repository/backend/model.py

.PHONY: setup model up down status demo test lint unit integration perf clean

setup: $(VENV)/.installed $(MODEL)

$(VENV)/.installed: pyproject.toml scripts/system-deps.sh
	scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[export,dev]'
	touch $@

# Export (ONNX fp32 + int8, parity gate) whenever the model code changes.
$(MODEL): $(VENV)/.installed $(MODEL_SOURCES)
	$(BIN)/tritonrag export

model: $(MODEL)

up: setup
	$(BIN)/tritonrag up

down:
	@if [ -x $(BIN)/tritonrag ]; then $(BIN)/tritonrag down; fi

status:
	$(BIN)/tritonrag status

# The whole stack, the project's own documentation ingested, one search and one embedding.
demo: setup
	$(BIN)/tritonrag up
	$(BIN)/tritonrag ingest README.md perf/results --collection tritonrag-docs
	$(BIN)/tritonrag search "how many texts per second does Triton serve?" \
	  --collection tritonrag-docs --top-k 3
	$(BIN)/tritonrag embed \
	  "Triton batches requests from many clients into one model run." \
	  "The inference server groups concurrent calls into a single batch." \
	  "Der Server fasst gleichzeitige Anfragen zu einem Stapel zusammen."
	@echo "The stack is still running on http://127.0.0.1:8080: \`make down\` stops it."

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy orchestrator workers export perf tests

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

test: setup lint
	$(BIN)/pytest -q -rs tests

perf: setup
	$(BIN)/python -m perf.side_by_side
	$(BIN)/python -m perf.perf_analyzer
	$(BIN)/python -m perf.ingest_search

clean: down
	rm -rf .runtime .models model_repository/cpu/*/1 model_repository/cpu/*/warmup
