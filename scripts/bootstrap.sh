#!/usr/bin/env bash
# Installs everything ai-bot's run and test commands need on a fresh Debian machine:
# uv (from PyPI), the workspace's Python packages (uv.lock), and the Debian tools the voice tests use
# to make speech (espeak-ng, ffmpeg), docker-compose to validate the compose file, Alertmanager
# (prometheus-alertmanager) for the alert-delivery tests, and Apache Kafka's broker jars for the tests
# (scripts/fetch-kafka.sh). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv
fi

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
# docker-compose 1.29 validates docker-compose.yml offline (no Docker engine needed).
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# The real Alertmanager (and amtool) the alert-delivery tests start with the shipped config.
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed; the voice and alert-delivery tests that need them will be skipped" >&2
  fi
fi

uv sync --all-packages --frozen --quiet

# The tests' broker: Apache Kafka from Maven Central (cached in .kafka/; skipped without Java/Maven).
scripts/fetch-kafka.sh
