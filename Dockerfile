# syntax=docker/dockerfile:1.7
#
# jobnet-operator image: the kopf operator (`jobnet operator`) plus the VM agent zipapp it
# uploads to VMs over SFTP. Build from the repository root (BuildKit is required):
#
#   docker build -t ghcr.io/jobnet-dev/jobnet-operator:0.1.0 .
#
# The base image is pinned by exact version. Pin it by digest as well in your registry
# mirror (PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:...): the digest could not be
# looked up from the offline machine this file was written on, so none is invented here.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# build: the project wheel, wheels of every dependency, a constraints file pinning exactly
# the resolved versions, and the agent zipapp.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The build backend runs in pip's isolated build environment; PIP_CONSTRAINT pins it there too.
RUN printf 'setuptools==75.6.0\nwheel==0.45.1\n' > /tmp/build-constraints.txt
ENV PIP_CONSTRAINT=/tmp/build-constraints.txt

RUN python -m pip install pip==24.3.1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY agent/ agent/

# Dependencies are resolved once, here, against the ranges and pins in pyproject.toml
# (kopf==1.45.2 ...); constraints.txt then freezes that resolution for the runtime stage.
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /tmp/resolve \
 && /tmp/resolve/bin/python -m pip install --no-index --find-links /wheels jobnet-operator \
 && /tmp/resolve/bin/python -m pip freeze --exclude-editable > /wheels/constraints.txt \
 && mkdir -p /out \
 && /tmp/resolve/bin/python -m jobnet_agent.bundle /out/jobnet-agent.pyz \
 && python3 /out/jobnet-agent.pyz version

# ---------------------------------------------------------------------------------------
# runtime: the operator only, no compilers, no pip, a non-root user.
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="jobnet-operator" \
      org.opencontainers.image.description="Kubernetes-native batch job networks run on VMs over SSH by a watchdog agent" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/jobnet-dev/jobnet-operator" \
      org.opencontainers.image.documentation="https://github.com/jobnet-dev/jobnet-operator/blob/main/docs/install.md" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    JOBNET_AGENT_ZIPAPP=/opt/jobnet/jobnet-agent.pyz

RUN groupadd --system --gid 10001 jobnet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin jobnet

# Installed offline from the build stage's wheels, pinned by its constraints file; the wheels
# are bind-mounted, so they never become a layer of this image. pip, setuptools and wheel
# leave with the install: nothing can be built or fetched at runtime.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links /wheels --constraint /wheels/constraints.txt jobnet-operator \
 && python -m pip uninstall --yes setuptools wheel pip \
 && jobnet --help > /dev/null

COPY --from=build --chown=root:root --chmod=0444 /out/jobnet-agent.pyz /opt/jobnet/jobnet-agent.pyz

USER 10001:10001
WORKDIR /tmp

# 9443: admission webhook (HTTPS), 8080: kopf liveness, 9090: Prometheus metrics.
EXPOSE 9443 8080 9090

ENTRYPOINT ["jobnet", "operator"]
