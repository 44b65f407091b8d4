# The operator image: multi-stage, slim base, non-root, pinned dependencies, no build tools in the final stage.
# Builds with `docker build .` (BuildKit) and without any Docker engine: `e2e/operator-image.sh build` runs this file
# with buildah (Debian's package) on a bookworm + python3 base that debootstrap makes from Debian's packages, pinned by
# its own digest (README.md "Installing in a cluster", e2e/README.md).
#
# The default base: Docker Hub's python:3.11-slim-bookworm pinned by its multi-arch index digest (bump tag and digest
# together; a digest pins every layer the tag would otherwise move under us).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS build
# A CA bundle for pip where an egress proxy re-signs TLS (e2e/operator-image.sh mounts the host's bundle and passes
# its path); unset by default. A build stage's ARG never reaches the final image.
ARG PIP_CERT
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Install exactly the pinned versions; the lock is the constraint set for the runtime dependencies (pyproject.toml
# states compatible ranges, for pip/pipx users). The dependencies first, in a layer of their own that only a change
# to pyproject.toml or the lock rebuilds; the project itself after, without dependencies (seconds). pip's cache is a
# build cache mount: never in a layer.
COPY requirements.lock pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/runtime-requirements.txt \
 && pip install --disable-pip-version-check -c requirements.lock -r /tmp/runtime-requirements.txt
COPY README.md ./
COPY operator ./operator
# Byte-code is compiled here, at build time: the pod runs with a read-only root filesystem (and
# PYTHONDONTWRITEBYTECODE), so without it every start would recompile kopf, boto3 and the Google clients in memory.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --disable-pip-version-check --no-deps -c requirements.lock . \
 && pip check \
 && python -m compileall -q -j 0 /opt/venv/lib

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 65532 placement \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin placement
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp
USER 65532:65532
# 8081: kopf's /healthz (liveness, readiness); 9090: the operator's /metrics. Matches the chart's defaults.
EXPOSE 8081 9090
ENTRYPOINT ["inference-placement", "run"]
# OCI annotations last: a new revision re-labels the image without invalidating the cached layers above.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="inference-placement" \
      org.opencontainers.image.description="Kubernetes operator placing inference workloads on cluster GPUs, Cloud Run or Lambda" \
      org.opencontainers.image.source="https://github.com/inference-placement/inference-placement" \
      org.opencontainers.image.url="https://github.com/inference-placement/inference-placement" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
