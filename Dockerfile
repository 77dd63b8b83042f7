# syntax=docker/dockerfile:1
# jackfield: controller + tool hub + status server (+ LiveKit worker when configured).
#
#   docker build -t jackfield .
#   docker run --rm -p 8080:8080 -v "$PWD:/config:ro" jackfield
#
# The config (agent.yaml + servers.d/) is mounted at /config, read-only; nothing is written there.
# State (SQLite by default) lives in the /var/lib/jackfield volume. See docs/deploy.md.

# Node.js 20 for servers launched with npx; only the runtime and npm are copied out of it.
FROM node:20-bookworm-slim AS node

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

# Extras from pyproject.toml: `postgres` (psycopg) by default; add `examples` for the sample
# servers.d/time.yaml (mcp-server-time): --build-arg JACKFIELD_EXTRAS=postgres,examples
ARG JACKFIELD_EXTRAS=postgres

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src

# A wheel of this repo (never a same-named package from an index), then that wheel with its
# dependencies and extras into a self-contained venv that the final stage copies as is.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install "$(ls /wheels/jackfield-*.whl)[${JACKFIELD_EXTRAS}]" \
 && /opt/venv/bin/jackfield --version

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="jackfield" \
      org.opencontainers.image.description="A patch panel for a LiveKit voice agent: plug MCP servers in and out by committing YAML." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# tini is PID 1: it forwards SIGTERM to jackfield only (jackfield closes its MCP servers itself)
# and reaps orphans that npx-launched servers may leave behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npx --version

COPY --from=builder /opt/venv /opt/venv

# Numeric USER below, so Kubernetes' runAsNonRoot can verify it. The home directory is the state
# volume: npx's cache (~/.npm) and the SQLite database live there.
RUN groupadd --system --gid 10001 jackfield \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/jackfield \
      --shell /usr/sbin/nologin jackfield \
 && mkdir -p /var/lib/jackfield /config \
 && chown jackfield:jackfield /var/lib/jackfield

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/jackfield \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    JACKFIELD_CONFIG_DIR=/config \
    JACKFIELD_DATABASE_URL=sqlite:////var/lib/jackfield/state.db \
    JACKFIELD_STATUS_HOST=0.0.0.0 \
    JACKFIELD_STATUS_PORT=8080

VOLUME /var/lib/jackfield
WORKDIR /var/lib/jackfield
USER 10001:10001

# Status server: /status, /healthz, /readyz, /metrics, dashboard. The tool hub (8765) stays on
# 127.0.0.1 for the container's own agent job processes and is not exposed.
EXPOSE 8080

# No curl in the slim image: the venv's Python does the request; any HTTP error fails the check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('JACKFIELD_STATUS_PORT', '8080'), timeout=4)"]

# SIGTERM: /readyz turns 503 at once, no new sessions, live tool calls get
# JACKFIELD_SHUTDOWN_GRACE (20 s), servers are closed, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "jackfield"]
CMD ["run"]
