"""ENTRYPOINT and HEALTHCHECK of the service images.

One recipe (docker/Dockerfile) builds every service's image, so an image records only which service
it was built for (AIBOT_SERVICE, from the SERVICE build argument) and this module looks the rest up
in the catalog:

    python -m aibot_common.entrypoint           # run the service, as `python -m <its module>` does
    python -m aibot_common.entrypoint healthz   # exit 0 when its /healthz answers 200 (liveness)
    python -m aibot_common.entrypoint readyz    # the same for /readyz (readiness: Kafka answers)

The probe imports nothing heavy (it runs every 30 seconds inside the container).
"""

from __future__ import annotations

import importlib
import os
import sys
import urllib.error
import urllib.request

from aibot_common.catalog import NAMES, ServiceSpec, service

PROBES = ("healthz", "readyz")


def configured_service() -> ServiceSpec:
    """The service AIBOT_SERVICE names; a missing or unknown name stops with the list of known ones."""
    name = os.environ.get("AIBOT_SERVICE", "")
    try:
        if not name:
            raise KeyError(f"set it to the service to run, one of {', '.join(NAMES)}")
        return service(name)
    except KeyError as exc:
        # Exit 2 like every other configuration error of the services.
        print(f"ai-bot: AIBOT_SERVICE: {exc.args[0]}", file=sys.stderr)
        raise SystemExit(2) from None


def probe(spec: ServiceSpec, path: str, timeout_s: float = 4.0) -> int:
    """0 when http://127.0.0.1:<port>/<path> answers 200, else 1 with the reason on stderr."""
    # The port the service really listens on: AIBOT_HTTP__PORT when the deployment sets one.
    port = os.environ.get("AIBOT_HTTP__PORT") or str(spec.port)
    url = f"http://127.0.0.1:{port}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status == 200:
                return 0
            print(f"{spec.name}: {url} answered {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"{spec.name}: {url}: {exc}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = configured_service()
    if not args:
        importlib.import_module(f"{spec.module}.__main__").main()
        return 0
    if len(args) == 1 and args[0] in PROBES:
        return probe(spec, args[0])
    print(f"usage: python -m aibot_common.entrypoint [{'|'.join(PROBES)}]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
