"""The generated `Dockerfile`: parsed (there is no docker daemon here) and held to what the
image must do: a slim Python base, the worker installed, a non-root user, a health check on
`/healthz`, the broker from the environment. The golden trees pin its text byte for byte."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TREES = sorted(p / "expected" for p in GOLDEN.iterdir() if (p / "expected" / "Dockerfile").exists())


def _parse(tree: Path) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((tree / "Dockerfile").read_bytes()))


def _instructions(parsed: DockerfileParser) -> list[tuple[str, str]]:
    return [
        (i["instruction"], i["value"]) for i in parsed.structure if i["instruction"] != "COMMENT"
    ]


def test_every_golden_build_has_a_dockerfile() -> None:
    builds = {p.name for p in GOLDEN.iterdir() if (p / "expected" / "pyproject.toml").exists()}
    assert {t.parent.name for t in TREES} == builds
    assert {"aggregates", "hook_calls", "hostile", "orders", "windows"} <= builds


@pytest.mark.parametrize("tree", TREES, ids=lambda t: t.parent.name)
def test_dockerfile_installs_the_worker_and_runs_it_unprivileged(tree: Path) -> None:
    parsed = _parse(tree)
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    script = project["name"]
    assert script in project["scripts"]
    steps = _instructions(parsed)
    assert parsed.baseimage == "python:3.11-slim"
    kinds = [k for k, _ in steps]
    # Installed from the build context (the package, with the runtime and its `requires`)...
    assert ("COPY", ". /src") in steps
    assert ("RUN", "pip install --find-links /src/wheels /src && rm -rf /src") in steps
    # ...as root, then the user switches before anything runs.
    user = kinds.index("USER")
    assert kinds.index("RUN", kinds.index("COPY")) < user
    assert dict(steps)["USER"] == "streamc"
    assert ("RUN", "useradd --create-home --uid 10001 --user-group streamc") in steps
    assert kinds[user:].count("RUN") == 0
    assert json.loads(dict(steps)["ENTRYPOINT"]) == [script]


@pytest.mark.parametrize("tree", TREES, ids=lambda t: t.parent.name)
def test_dockerfile_takes_the_broker_from_the_environment_and_probes_healthz(tree: Path) -> None:
    parsed = _parse(tree)
    envs = parsed.envs
    assert envs["STREAMC_BROKER"] == ""  # must be given at `docker run`
    assert envs["STREAMC_METRICS_HOST"] == "0.0.0.0"  # probes come from outside the container
    assert envs["STREAMC_LOG_FORMAT"] == "json"
    steps = dict(_instructions(parsed))
    assert steps["EXPOSE"] == envs["STREAMC_METRICS_PORT"] == "9400"
    options, _, command = steps["HEALTHCHECK"].partition("CMD")
    assert options.split() == [
        "--interval=15s",
        "--timeout=5s",
        "--start-period=30s",
        "--retries=3",
    ]
    assert json.loads(command) == ["python", "-m", "streamc_runtime.probe", "healthz"]


@pytest.mark.parametrize("tree", TREES, ids=lambda t: t.parent.name)
def test_dockerfile_is_in_the_build_manifest(tree: Path) -> None:
    manifest = json.loads((tree / ".streamc-manifest.json").read_text())
    assert "Dockerfile" in manifest["files"]


def test_requires_reach_the_generated_pyproject() -> None:
    project = tomllib.loads((GOLDEN / "hook_calls" / "expected" / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == [
        "streamc-runtime>=0.1,<0.2",
        "httpx>=0.27",
        'tomli>=2; python_version < "3.11"',
    ]


def test_the_image_environment_refuses_to_run_without_a_broker(tmp_path: Path) -> None:
    """The image leaves STREAMC_BROKER empty: the worker exits 2 with a message, never
    falling back to an in-process broker."""
    tree = GOLDEN / "orders" / "expected"
    env = {**os.environ, **_parse(tree).envs}
    env["STREAMC_METRICS_PORT"] = "0"
    env["PYTHONPATH"] = str(tree)
    result = subprocess.run(
        [sys.executable, "-m", "orders_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "bad broker URL ''" in result.stderr and "Traceback" not in result.stderr
