# The two README commands, `make run` and `make test`, work on a fresh machine.
# The Dockerfile installs with `make install` too, so what CI proves holds in the image.
PYTHON   ?= python3
VENV     ?= .venv
BIN       = $(VENV)/bin
EXTRAS   ?= test,bench
EDITABLE ?= -e
SPEC      = .$(if $(EXTRAS),[$(EXTRAS)])

.PHONY: install run test lint typecheck bench clean

$(BIN)/kaskad: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(EDITABLE) '$(SPEC)'
	touch $@

install: $(BIN)/kaskad

run: install
	$(BIN)/kaskad run --config config.yaml

lint: install
	$(BIN)/ruff check engine channels tests bench
	$(BIN)/ruff format --check engine channels tests bench
	$(BIN)/hadolint Dockerfile
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
