# AgentFlow images. Two targets from one file:
#   docker build --target app    -t agentflow-app .     # web UI + REST API + MLflow server (the default target)
#   docker build --target worker -t agentflow-worker .  # `agentflow worker` only: no Gradio, no MLflow server
# Offline machines pass a base image made by scripts/docker-engine.sh: --build-arg BASE=local/bookworm-slim
# (and --network host, so that apt and pip inside the build can reach Debian's mirror and PyPI).
ARG BASE=debian:bookworm-slim

# -- the interpreter every stage shares: Debian bookworm's python3 (3.11) ---------------------------
FROM ${BASE} AS python
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

# -- build: a venv with exactly the locked versions, checked against their hashes --------------------
FROM python AS builder
# Behind a TLS-inspecting proxy, pass its root certificate(s) as PEM text:
#   --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"
# They are trusted by this build stage only; the images copy nothing but /opt/venv from it.
ARG EXTRA_CA_CERTS=""
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" >> /etc/ssl/certs/ca-certificates.crt; fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

FROM builder AS deps-worker
COPY requirements-worker.lock ./
# Wheels only: nothing is compiled, so the builder needs no compiler.
RUN pip install --quiet --require-hashes --no-deps --only-binary=:all: -r requirements-worker.lock

# -- runtime: python3, the venv, a non-root user (UID 1000, as on Hugging Face Spaces) ---------------
FROM python AS runtime
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/agentflow --shell /usr/sbin/nologin agentflow \
    && install -d -o agentflow -g agentflow /data
# The locked dependencies are one large layer; the project is installed above it in a small one,
# so a change to agentflow/ rebuilds and ships only that (pip and setuptools come from the lock).
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    AGENTFLOW_HOME=/data \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    GRADIO_ANALYTICS_ENABLED=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    PYTHONUNBUFFERED=1
WORKDIR /home/agentflow

FROM runtime AS worker
COPY --from=deps-worker /opt/venv /opt/venv
COPY pyproject.toml README.md /tmp/agentflow/
COPY agentflow /tmp/agentflow/agentflow
RUN pip install --quiet --no-deps --no-build-isolation /tmp/agentflow \
    && pip check && rm -rf /tmp/agentflow
USER agentflow
# No HEALTHCHECK: the worker has no endpoint to ask, and the container stops when its process does
# (compose restarts it). A check that the process is alive would only restate that.
CMD ["agentflow", "worker"]

FROM builder AS deps-app
COPY requirements-app.lock ./
RUN pip install --quiet --require-hashes --no-deps --only-binary=:all: -r requirements-app.lock

# Last, so that a plain `docker build .` (as Hugging Face Spaces runs it) builds the app.
FROM runtime AS app
COPY --from=deps-app /opt/venv /opt/venv
COPY pyproject.toml README.md /tmp/agentflow/
COPY agentflow /tmp/agentflow/agentflow
RUN pip install --quiet --no-deps --no-build-isolation /tmp/agentflow \
    && pip check && rm -rf /tmp/agentflow
# The assistant reads prompts/ and examples/ from the directory above the package
# (agentflow/chat/prompts.py: parents[2]), which for an installed package is site-packages.
COPY prompts /opt/venv/lib/python3.11/site-packages/prompts
COPY examples /opt/venv/lib/python3.11/site-packages/examples
USER agentflow
ENV AGENTFLOW_HOST=0.0.0.0 AGENTFLOW_PORT=7860
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('AGENTFLOW_PORT', '7860') + '/health', timeout=4)"]
CMD ["agentflow", "serve"]
