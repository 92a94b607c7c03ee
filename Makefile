# Quick start: `make demo` runs the whole story, `make test` runs the checks and the tests.
# Both create the local virtual environment .venv on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test lint venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "make: creating $(VENV) and installing the toolkit with torch, onnx, onnxruntime, Ray, the server and the test tools"
	@echo "make: (pinned by constraints.txt; about 1.5 minutes the first time, again only when pyproject.toml or constraints.txt changes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,dev]'
	@echo "make: $(VENV) is ready"
	touch $@

demo: venv
	$(BIN)/rnn demo --out $(OUT)

# The layers (import-linter contracts in pyproject.toml), ruff's lint and format check.
lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out build *.egg-info
