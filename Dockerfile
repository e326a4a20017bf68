# The ext-authz server image.
#
#   docker build -t ext-authz:0.1.0 .
#   docker run --rm -v "$PWD/config/policy.example.yaml:/etc/ext-authz/policy.yaml:ro" \
#       -p 127.0.0.1:9001:9001 ext-authz:0.1.0
#
# Stage "build" turns the project and every dependency into wheels; stage "runtime"
# installs them from that wheelhouse without an index, so the shipped image holds no
# build tools, no source tree and no pip cache. Both stages use the same base image, so
# the wheels always match its Python.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY ext_authz ./ext_authz
# With the `otel` extra, so that `--otlp-endpoint` works in the image.
RUN pip wheel --wheel-dir /wheels '.[otel]'


FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="ext-authz" \
      org.opencontainers.image.description="Envoy ext_authz gRPC server that verifies JWT bearer tokens against a YAML policy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The wheelhouse is bind-mounted for this one step only: it never becomes a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels 'ext-authz[otel]' \
    # xds-protos carries its own copy of OpenTelemetry's common_pb2.py: keep the exporter's
    && pip install --no-index --find-links=/wheels --force-reinstall --no-deps opentelemetry-proto \
    && groupadd --gid 10001 ext-authz \
    && useradd --uid 10001 --gid ext-authz --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin ext-authz \
    && mkdir -p /etc/ext-authz

USER 10001:10001
WORKDIR /etc/ext-authz
EXPOSE 9001

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["ext-authz", "health", "--target", "127.0.0.1:9001"]

ENTRYPOINT ["ext-authz"]
CMD ["serve", "--config", "/etc/ext-authz/policy.yaml", "--listen", "0.0.0.0:9001"]
