# The training image RunPod pods run: `hubferry agent` trains with trl, reports to the orchestrator and
# publishes from the pod (docs/pod-agent.md). Not built in CI (no registry access there). By hand:
#
#   docker build -t ghcr.io/hubferry/hubferry-agent:0.1.0 .
#   docker push ghcr.io/hubferry/hubferry-agent:0.1.0      # HUBFERRY_RUNPOD_IMAGE, or --image, names it
#
# What it expects at run time (the orchestrator sets the variables when it deploys the pod):
#   HUBFERRY_CALLBACK_URL, HUBFERRY_JOB_TOKEN, HUBFERRY_JOB_ID   the job's callbacks and their token (the
#                                                                only secret in the pod)
#   HF_ENDPOINT                                                  the Hub the base model (and a Hub dataset)
#                                                                are downloaded from, anonymously
#   the pod volume at /workspace: HUBFERRY_AGENT_DIR (/workspace/hubferry) keeps the trained weights across
#   a pod stop (a restarted agent publishes them without training again), HF_HOME the downloaded base model
#   an NVIDIA GPU whose driver runs the base image's CUDA (bf16 on Ampere or newer, else fp16; CPU works,
#   slowly)
#
# The base image's Python must be 3.11 and its torch the train extra's pin (torch==2.13.0), or pip
# replaces it with PyPI's build; the RUN below stops the build when the Python is wrong.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false \
    TRL_EXPERIMENTAL_SILENCE=1 \
    HUBFERRY_AGENT_DIR=/workspace/hubferry \
    HF_HOME=/workspace/.cache/huggingface

# tini as PID 1: it forwards RunPod's SIGTERM to the agent (which stops the training's process group and
# reports) and reaps orphaned processes, which a Python PID 1 would leave as zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/hubferry
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -c "import sys; assert sys.version_info[:2] == (3, 11), f'hubferry needs Python 3.11, not {sys.version}'" \
    && python -m pip install ".[train]" \
    && python -c "import trl, peft, datasets, hubferry.trainers.agent.runner, hubferry.trainers.agent.trl_train" \
    && hubferry agent --help > /dev/null

WORKDIR /workspace
ENTRYPOINT ["/usr/bin/tini", "--", "hubferry", "agent"]
