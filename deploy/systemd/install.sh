#!/usr/bin/env bash
# Install ai-bot as a systemd service on this host, from this checkout:
#   sudo deploy/systemd/install.sh            # install, enable and start
#   sudo deploy/systemd/install.sh --no-start # install and enable only (fill in the env file first)
# Sources go to /opt/ai-bot, settings to /etc/ai-bot (ai-bot.env with the secrets, config.yaml),
# state to /var/lib/ai-bot, run as the system user ai-bot. Running it again upgrades the sources
# and keeps /etc/ai-bot as it is.
#
# AIBOT_INSTALL_ROOT=DIR stages everything under DIR instead of / and skips what only a real host
# can do (the user, docker group, systemctl) - for packaging and for the tests.
set -euo pipefail

start=1
for arg in "$@"; do
  case "$arg" in
    --no-start) start=0 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
root="${AIBOT_INSTALL_ROOT:-}"
home="$root/opt/ai-bot"
etc="$root/etc/ai-bot"
unit_dir="$root/etc/systemd/system"
staged=0
[ -n "$root" ] && staged=1

if [ "$staged" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo $0)" >&2
  exit 1
fi

docker_answers() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# What this will do, said before doing it.
echo "install.sh: installing ai-bot from $src:"
[ "$staged" = 0 ] && ! id ai-bot >/dev/null 2>&1 && echo "  - a system user ai-bot (no login, home /var/lib/ai-bot)"
echo "  - the sources into $home (its .venv is kept)"
if docker_answers; then
  echo "  - nothing else: Docker answers, so the service runs docker compose up (user ai-bot joins group docker)"
else
  echo "  - the services into $home/.venv with uv sync (no Docker engine answers)"
fi
echo "  - $etc/ai-bot.env and $etc/config.yaml, only where they do not exist yet"
echo "  - the unit $unit_dir/ai-bot.service (also answers to ai-bot-service), enabled$([ "$start" = 1 ] && echo " and started")"

# 1. The service user (no login, home = its state directory).
if [ "$staged" = 0 ] && ! id ai-bot >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/ai-bot --no-create-home --shell /usr/sbin/nologin ai-bot
fi

# 2. The sources, without local state; a previous virtual environment is kept for a fast re-sync.
mkdir -p "$home"
find "$home" -mindepth 1 -maxdepth 1 ! -name .venv ! -name .python -exec rm -rf {} +
tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./.python --exclude=./tools --exclude=./.env \
  --exclude=./.local --exclude='*/__pycache__' --exclude=./.pytest_cache --exclude=./.ruff_cache -cf - . \
  | tar -C "$home" -xf -
chmod 0755 "$home/deploy/systemd/ai-bot-start.sh"

# 3. How it will run: Docker when an engine answers, else processes from a virtual environment.
if docker_answers; then
  if [ "$staged" = 0 ]; then
    usermod -aG docker ai-bot
  fi
  echo "install.sh: Docker answers: the service will run docker compose up"
elif [ "$staged" = 0 ]; then
  command -v uv >/dev/null 2>&1 || { echo "install.sh: no Docker engine, so uv is needed (https://docs.astral.sh/uv/)" >&2; exit 1; }
  echo "install.sh: no Docker engine: installing the services into $home/.venv for ai-bot up"
  # The dev group brings the embedded development broker `ai-bot up` falls back to when
  # kafka.bootstrap_servers does not answer; production points that at Apache Kafka.
  (cd "$home" && UV_PROJECT_ENVIRONMENT="$home/.venv" UV_PYTHON_INSTALL_DIR="$home/.python" \
    uv sync --frozen --all-packages)
fi

# 4. Settings, written once: an upgrade never overwrites the operator's files.
install -d -m 0750 "$etc"
if [ ! -e "$etc/ai-bot.env" ]; then
  install -m 0640 "$src/.env.example" "$etc/ai-bot.env"
  echo "install.sh: wrote $etc/ai-bot.env - replace every changeme in it"
fi
if [ ! -e "$etc/config.yaml" ]; then
  install -m 0640 "$src/deploy/compose/config.yaml" "$etc/config.yaml"
fi
if [ "$staged" = 0 ]; then
  chown -R root:ai-bot "$etc"
fi

# 5. The unit.
install -d "$unit_dir"
install -m 0644 "$src/deploy/systemd/ai-bot.service" "$unit_dir/ai-bot.service"
if [ "$staged" = 1 ]; then
  echo "install.sh: staged under $root"
  exit 0
fi
systemctl daemon-reload
if [ "$start" = 1 ]; then
  systemctl enable --now ai-bot
  echo "install.sh: ai-bot is running; follow it with journalctl -u ai-bot -f"
else
  systemctl enable ai-bot
  echo "install.sh: enabled; start it with systemctl start ai-bot once $etc/ai-bot.env is filled in"
fi
