# The course's commands. Each creates .venv on first use and reinstalls when requirements change.
#   make test       unit tests + every notebook through nbval (+ the browser test when Chromium is there)
#   make book       build the book into _build/html with zero warnings
#   make notebooks  format each .py twin, sync it with its notebook, re-execute the notebook in place
#   make lint       ruff on the package, tests, benchmarks and notebooks
#   make bench      time attention, training, generation and the notebooks; JSON in benchmarks/results/

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every chapter's .py twin; `make notebooks NB=book/part1_decoder/01_the_toy_language.py` runs one.
NB ?= $(shell find book -name '*.py' -not -path '*/.ipynb_checkpoints/*' | sort)

.PHONY: test book notebooks lint clean bench

# On Linux, PyPI's torch wheel is the CUDA build (gigabytes of NVIDIA libraries that a CPU
# course never uses), so torch alone comes from PyTorch's CPU index first, as in CI (its
# 2.13.0+cpu satisfies the pin torch==2.13.0). Only torch is asked for there. If that index
# cannot be reached, pip takes torch from its usual index. `make test TORCH_INDEX=` skips it.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN   := $(shell grep -E '^torch==' requirements.txt)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_INDEX)" ] && [ -n "$(TORCH_PIN)" ] && [ "$$(uname -s)" = Linux ]; then \
		$(BIN)/python -m pip install --quiet --no-deps --index-url "$(TORCH_INDEX)" "$(TORCH_PIN)" \
		|| echo "note: $(TORCH_PIN) not found at $(TORCH_INDEX); pip takes it from its usual index"; \
	fi
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going

notebooks: $(STAMP)
	@for py in $(NB); do \
		nb="$${py%.py}.ipynb"; echo "== $$nb"; \
		$(BIN)/ruff format --quiet "$$py" && $(BIN)/jupytext --sync "$$py" || exit 1; \
		$(BIN)/jupyter execute --inplace --timeout=600 --kernel_name=python3 "$$nb" || exit 1; \
		$(BIN)/jupytext --sync "$$nb" || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard src tests benchmarks book scripts)
	$(BIN)/ruff format --check $(wildcard src tests benchmarks book scripts)

clean:
	rm -rf _build

# Each script measures in one process and writes benchmarks/results/<name>.json (<name>-cuda.json
# on a GPU). Minutes on two cores; `make bench BENCH_ARGS="--quick --out /tmp/bench"` is a smoke test.
BENCH_ARGS ?=
bench: $(STAMP)
	@for script in attention_scaling training_throughput generation notebooks mixed_precision; do \
		echo "== benchmarks/$$script.py"; \
		$(BIN)/python benchmarks/$$script.py $(BENCH_ARGS) || exit 1; \
	done
