#!/bin/sh
# ExecStart of ai-bot.service: `docker compose up` when a Docker engine answers, otherwise every
# service as a local process with `ai-bot up`. AIBOT_RUNTIME=compose|process forces one of them.
set -eu

home="${AIBOT_HOME:-/opt/ai-bot}"
env_file="${AIBOT_ENV_FILE:-/etc/ai-bot/ai-bot.env}"
runtime="${AIBOT_RUNTIME:-auto}"

case "$runtime" in
  auto | compose | process) ;;
  *) echo "ai-bot-start: AIBOT_RUNTIME must be auto, compose or process (got '$runtime')" >&2; exit 2 ;;
esac

docker_answers() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

if [ "$runtime" != process ] && docker_answers; then
  if docker compose version >/dev/null 2>&1; then
    set -- docker compose
  elif command -v docker-compose >/dev/null 2>&1; then
    set -- docker-compose
  else
    echo "ai-bot-start: Docker answers, but neither 'docker compose' nor docker-compose is installed" >&2
    exit 1
  fi
  # The compose file reads these: the secrets for the containers, the host's config file.
  export AIBOT_ENV_FILE="$env_file"
  export AIBOT_CONFIG_FILE="${AIBOT_CONFIG_FILE:-/etc/ai-bot/config.yaml}"
  echo "ai-bot-start: docker compose up (project ${COMPOSE_PROJECT_NAME:-ai-bot} in $home)"
  exec "$@" --project-directory "$home" -f "$home/docker-compose.yml" --env-file "$env_file" \
    -p "${COMPOSE_PROJECT_NAME:-ai-bot}" up --build --remove-orphans
fi

if [ "$runtime" = compose ]; then
  echo "ai-bot-start: AIBOT_RUNTIME=compose, but no Docker engine answers" >&2
  exit 1
fi

if [ ! -x "$home/.venv/bin/ai-bot" ]; then
  echo "ai-bot-start: no Docker engine and no $home/.venv/bin/ai-bot; run deploy/systemd/install.sh again" >&2
  exit 1
fi
echo "ai-bot-start: no Docker engine; running the services as processes (ai-bot up)"
exec "$home/.venv/bin/ai-bot" up
