# Every target installs what it needs into .venv (CPU torch from the local wheel cache / PyPI CPU build).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/ml-1m
OUT ?= runs/ml1m
RUN_ARGS ?=
LORA_ARGS ?=

LLM ?= runs/llm/smollm2-135m

.PHONY: install test run smoke bench bench-quick clean

$(BIN)/cl3mrec: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/cl3mrec

test: install
	$(BIN)/python -m pytest -q tests

run: install
	DATA=$(DATA) OUT=$(OUT) LORA_ARGS="$(LORA_ARGS)" PATH=$(abspath $(BIN)):$$PATH bash scripts/run_ml1m.sh $(RUN_ARGS)

smoke: install
	$(BIN)/cl3mrec pipeline --config configs/smoke.yaml

$(LLM)/config.json:
	$(BIN)/cl3mrec llm fetch smollm2-135m --out $(LLM)

bench: install $(LLM)/config.json
	DATA=$(DATA) PYTHON=$(abspath $(BIN))/python bash benchmarks/run_all.sh --llm $(LLM) --allow-pickle

bench-quick: install $(LLM)/config.json
	DATA=$(DATA) $(BIN)/python benchmarks/bench_scoring.py --quick --llm $(LLM) --allow-pickle

clean:
	rm -rf $(VENV) runs .pytest_cache
