# syntax=docker/dockerfile:1
# cm-api container image. `make image` builds it, labelled and tagged with pyproject.toml's version:
#   docker build --build-arg VERSION="$(make -s version)" -t cm-api:"$(make -s version)" .
#   docker run --rm -p 8080:8080 -e DB_HOST=... -e DB_USER=... -e DB_PASSWORD=... -e DB_NAME=... cm-api:<version>
# Kubernetes manifests: deploy/k8s/ (they mount the password as a file: DB_PASSWORD_FILE).
#
# Two stages: the builder turns pyproject.toml into wheels (the project's and every dependency's);
# the final stage installs those wheels only, so no compiler, build backend or source tree ships.
# Both stages use the same base so that wheels built for its Python and libc are the ones installed.

# The base is pinned by tag (Python minor version and Debian release); bump both FROM lines together.
FROM python:3.11-slim-bookworm AS builder

# The image's version label; `make image` passes pyproject.toml's. Required, and the build below
# fails unless the wheel it makes carries that very version, so the label cannot drift from it.
ARG VERSION

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the build backend reads (pyproject.toml names README.md as the long description);
# .dockerignore keeps everything else out of the context.
COPY pyproject.toml README.md ./
COPY service/ service/

# Every dependency (aiohttp, aiomysql, PyMySQL, orjson, uvloop, ...) publishes manylinux wheels
# for CPython 3.11 on amd64 and arm64, so this needs no apt-get'ed compiler; `pip wheel` only
# downloads those and builds the project's own pure-Python wheel with setuptools.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .
RUN test -f "/wheels/cm_api-${VERSION:?pass --build-arg VERSION, as make image does}-py3-none-any.whl" \
    || { echo "VERSION=${VERSION} is not pyproject.toml's version; build with make image" >&2; exit 1; }


FROM python:3.11-slim-bookworm

ARG VERSION
LABEL org.opencontainers.image.title="cm-api" \
      org.opencontainers.image.description="Operations dashboard JSON API served from MySQL/MariaDB" \
      org.opencontainers.image.version="${VERSION}"

# PYTHONUNBUFFERED: log lines reach `kubectl logs` as they are written.
# PYTHONDONTWRITEBYTECODE: nothing is written under site-packages at run time, so the root
# filesystem can be read-only (pip below already compiled the .pyc files at install time).
# PYTHONSAFEPATH: `python -m service` does not put the working directory on sys.path, so only
# the installed package can be imported as `service`.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheels are bind-mounted from the builder for this one step, so they never become a layer
# (RUN --mount needs BuildKit: the default builder since Docker 23, and buildah/podman).
# --no-index: nothing is fetched here; the set the builder resolved is exactly what is installed.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && groupadd --system --gid 10001 cm-api \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cm-api

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8080

# Exec form: Python is PID 1 and receives SIGTERM itself, which starts the graceful shutdown
# (/readyz 503, SHUTDOWN_DELAY_SECONDS, then SHUTDOWN_GRACE_SECONDS for requests in flight).
ENTRYPOINT ["python", "-m", "service"]
