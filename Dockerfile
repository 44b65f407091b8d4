# The operator image: multi-stage, slim base, non-root, pinned dependencies, no build tools in the final stage.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock pyproject.toml README.md ./
COPY operator ./operator
# Install exactly the pinned versions; the lock is the constraint set for the runtime dependencies.
# Byte-code is compiled here, at build time: the pod runs with a read-only root filesystem (and
# PYTHONDONTWRITEBYTECODE), so without it every start would recompile kopf, boto3 and the Google clients in memory.
RUN pip install --no-cache-dir --disable-pip-version-check -c requirements.lock . \
 && python -m compileall -q -j 0 /opt/venv/lib

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="inference-placement" \
      org.opencontainers.image.description="Kubernetes operator placing inference workloads on cluster GPUs, Cloud Run or Lambda"
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
