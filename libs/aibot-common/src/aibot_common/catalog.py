"""The one table of ai-bot's services: name, Python module, HTTP port, and what each deployment needs.

Everything that runs or deploys the services reads this list or is checked against it, so adding a
service touches this file (plus the service's own package):

- the services' `__main__` (their default HTTP port) and the images' entry point
  (aibot_common.entrypoint, which runs the service the image was built for);
- the local supervisor of `ai-bot up` and the end-to-end tests (aibot_cli.supervisor);
- the Helm chart: charts/ai-bot/files/services.yaml is generated from it
  (`uv run python -m aibot_common.catalog chart > charts/ai-bot/files/services.yaml`), since
  templates cannot import Python; tests/deploy/test_catalog.py fails when that file is stale;
- docker-compose.yml, the Caddyfile, deploy/prometheus/prometheus.yml and the values.yaml blocks,
  which tests/deploy checks against this table;
- `make images`, which builds docker/Dockerfile once per service (`python -m aibot_common.catalog names`).

Deliberately free of heavy imports: the images' HEALTHCHECK imports it every 30 seconds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    """One service as the deployments see it."""

    name: str  # the service's name: process, container, Deployment suffix, component label, log file
    module: str  # its package, run with `python -m <module>`
    port: int  # the HTTP port of /healthz, /readyz, /metrics (and the webhook, when public)
    public: bool = False  # serves a platform's webhook: reachable from the internet through the proxy/Ingress
    platform: str | None = None  # an ingress runs only while this platform is enabled (config `<platform>.enabled`)
    gpu: bool = False  # has the CUDA image variant (docker/Dockerfile with VARIANT=cuda) and the chart's GPU pool
    # A second HTTP port for the admin API (core-llm): never public, reachable inside the cluster only.
    admin_port: int | None = None
    # The Kafka consumer groups its stages run (topics.py names them; tests/unit/test_catalog.py holds
    # the two to each other): what its lag is measured by, and what a lag-driven autoscaler watches.
    groups: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        """The distribution under services/<name>/ (what an image installs)."""
        return f"aibot-{self.name}"

    @property
    def image(self) -> str:
        """The image repository the chart and compose use for it."""
        return f"ai-bot-{self.name}"

    @property
    def values_key(self) -> str:
        """Its block in the chart's values.yaml: the name in camelCase (core-llm -> coreLlm)."""
        first, *rest = self.name.split("-")
        return first + "".join(word.capitalize() for word in rest)


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("ingress-telegram", "aibot_ingress_telegram", 8081, public=True, platform="telegram"),
    ServiceSpec("ingress-feishu", "aibot_ingress_feishu", 8082, public=True, platform="feishu"),
    ServiceSpec("core-llm", "aibot_core_llm", 8083, admin_port=8086, groups=("aibot-core-llm",)),
    ServiceSpec("asr-worker", "aibot_asr_worker", 8084, gpu=True, groups=("aibot-asr-worker",)),
    ServiceSpec(
        "renderer",
        "aibot_renderer",
        8085,
        groups=("aibot-response-processor", "aibot-renderer-telegram", "aibot-renderer-feishu"),
    ),
    # 8087: 8086 is core-llm's admin port.
    ServiceSpec("archiver", "aibot_archiver", 8087, groups=("aibot-archiver", "aibot-usage")),
)

NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)


def service(name: str) -> ServiceSpec:
    """The service called `name`; an unknown name is an error that lists the known ones."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown service {name!r}: the services are {', '.join(NAMES)}")


def chart_fragment() -> str:
    """charts/ai-bot/files/services.yaml: the table as the chart's templates read it (`ai-bot.serviceList`)."""
    lines = [
        "# Generated from libs/aibot-common/src/aibot_common/catalog.py: do not edit. Regenerate with",
        "#   uv run python -m aibot_common.catalog chart > charts/ai-bot/files/services.yaml",
        "# name: component label and Deployment suffix; key: its values block; port: HTTP (probes, metrics,",
        "# webhook); public: serves a webhook (Ingress, NetworkPolicy); platform: runs only while",
        "# config.<platform>.enabled; gpu: has the CUDA image and the GPU pool settings; adminPort: the",
        "# admin API's port (0: none), a ClusterIP port never routed by the webhook Ingress.",
    ]
    lines.append("# lag: the (topic, group) pairs its consumer groups read, which a KEDA ScaledObject scales on.")
    # Imported here: the HEALTHCHECK imports this module and must stay light; the chart command is rare.
    from aibot_common.topics import CONSUMPTION

    for s in SERVICES:
        platform = s.platform or '""'
        lag = ", ".join(f"{{topic: {t}, group: {g}}}" for t, g in CONSUMPTION if g in s.groups)
        lines.append(
            f"- {{name: {s.name}, key: {s.values_key}, port: {s.port}, module: {s.module}, "
            f"public: {str(s.public).lower()}, platform: {platform}, gpu: {str(s.gpu).lower()}, "
            f"adminPort: {s.admin_port or 0}, lag: [{lag}]}}"
        )
    return "\n".join(lines) + "\n"


USAGE = """usage: python -m aibot_common.catalog COMMAND
  names   the service names, one a line (for shell loops: make images); --gpu: those with a CUDA image
  table   name, module, port, public, platform, gpu as tab-separated columns
  chart   the chart's generated charts/ai-bot/files/services.yaml"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command == "names" and args[1:] in ([], ["--gpu"]):
        print("\n".join(s.name for s in SERVICES if s.gpu or args[1:] != ["--gpu"]))
    elif command == "table":
        for s in SERVICES:
            print(f"{s.name}\t{s.module}\t{s.port}\t{s.public}\t{s.platform or '-'}\t{s.gpu}")
    elif command == "chart":
        sys.stdout.write(chart_fragment())
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
