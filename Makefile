# Two set-up commands: `make run` and `make test`. Both build .venv from scratch when needed.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/feedbackloop/v1/*.proto)
PROTO_STAMP := services/feedbackloop/v1/.generated
NODE_TOOLS := tests/polyglot/node_modules/.installed
# `make run HOST=0.0.0.0 PORT=50052` passes --host/--port; without them the server's own
# settings apply (FEEDBACKLOOP_HOST, FEEDBACKLOOP_PORT, the config file, then 127.0.0.1:50051).
# Only values given on make's command line count: HOST or PORT in the environment (shells and
# platforms set them for other purposes) are not server settings.
SERVE_ARGS := $(if $(filter command line,$(origin HOST)),--host $(HOST)) \
	$(if $(filter command line,$(origin PORT)),--port $(PORT))

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint typecheck proto buf-lint pytest bench clean setup

setup: $(STAMP) $(PROTO_STAMP)

# torch is installed first and pinned: this machine serves torch==2.13.0 (CPU) from disk,
# while an unpinned torch (sentence-transformers asks for one) would pull GBs of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $@

# Generated Python code is built from proto/ at build time and never committed.
$(PROTO_STAMP): $(STAMP) $(PROTOS)
	$(PY) -m grpc_tools.protoc -I proto --python_out=services --pyi_out=services \
		--grpc_python_out=services $(PROTOS)
	touch $@

proto: $(PROTO_STAMP)

run: setup
	$(VENV)/bin/feedbackloop $(strip serve $(SERVE_ARGS))

lint: setup
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/ruff format --check services tests bench

typecheck: setup
	$(VENV)/bin/mypy

$(NODE_TOOLS): tests/polyglot/package.json
	cd tests/polyglot && npm install --no-audit --no-fund --loglevel=error
	touch $@

buf-lint: $(NODE_TOOLS)
	cd proto && ../tests/polyglot/node_modules/.bin/buf lint

pytest: setup $(NODE_TOOLS)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck buf-lint pytest

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(PROTO_STAMP) services/feedbackloop/v1/*_pb2*.py* tests/polyglot/node_modules
