"""Non-editable installs, run from another folder: the compiler carries its grammar and
templates, and a generated worker needs nothing but streamc-runtime and its dependencies.

The fresh virtualenvs see third-party packages through a `.pth` file pointing at a folder of
links to exactly the distributions allowed, so the tests need no network and prove what the
worker does *not* depend on.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _requirement_closure(requirements: Iterable[str]) -> set[str]:
    """The distributions `requirements` need here, following those whose markers hold (so no
    extras, and nothing for other platforms)."""
    seen: set[str] = set()
    pending = list(requirements)
    while pending:
        requirement = Requirement(pending.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in seen:
            seen.add(name)
            pending.extend(md.requires(name) or [])
    return seen


def _venv_seeing(path: Path, distributions: set[str]) -> Path:
    """A virtualenv whose only third-party packages are links to `distributions`."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    allowed = path / "allowed"
    allowed.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for name in distributions:
        dist = md.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops:
            if top.endswith(".dist-info") or top.startswith(("__editable__", "..")):
                if top.endswith(".dist-info"):
                    (allowed / top).symlink_to(site / top)
                continue
            if (site / top).exists() and not (allowed / top).exists():
                (allowed / top).symlink_to(site / top)
    (
        path
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
        / "allowed.pth"
    ).write_text(f"{allowed}\n")
    return path


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        REPO,
        REPO / "runtime",
        cwd=REPO,
    )
    return out


def _install(venv: Path, *wheels: Path) -> None:
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        *wheels,
        cwd=venv,
    )


def test_installed_compiler_builds_the_sample_from_another_folder(
    wheels: Path, tmp_path: Path
) -> None:
    compiler_deps = _requirement_closure(md.requires("streamc") or []) - {"streamc-runtime"}
    runtime_deps = _requirement_closure(["streamc-runtime"]) - {"streamc-runtime"}
    venv = _venv_seeing(tmp_path / "compiler-venv", compiler_deps | runtime_deps)
    _install(venv, *wheels.glob("*.whl"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    check = _run(venv / "bin" / "streamc", "check", REPO / "samples" / "orders.sdl", cwd=elsewhere)
    assert "ok" in check.stdout
    _run(
        venv / "bin" / "streamc",
        "build",
        REPO / "samples" / "orders.sdl",
        "-o",
        "out",
        cwd=elsewhere,
    )
    assert (elsewhere / "out" / "orders_worker" / "__main__.py").is_file()

    # The generated worker: a wheel installed beside streamc-runtime and its dependencies only.
    worker_wheels = tmp_path / "worker-wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        worker_wheels,
        elsewhere / "out",
        cwd=elsewhere,
    )
    worker_venv = _venv_seeing(tmp_path / "worker-venv", runtime_deps)
    _install(worker_venv, *worker_wheels.glob("*.whl"), *wheels.glob("streamc_runtime-*.whl"))
    python = worker_venv / "bin" / "python"
    helped = _run(python, "-m", "orders_worker", "--help", cwd=tmp_path)
    assert "--broker" in helped.stdout
    assert "--broker" in _run(worker_venv / "bin" / "orders-worker", "--help", cwd=tmp_path).stdout
    for absent in ("streamc", "lark", "black", "jinja2"):
        probe = _run(python, "-c", f"import {absent}", cwd=tmp_path, check=False)
        assert probe.returncode != 0, f"the worker's environment can import {absent}"


def test_installed_worker_imports_the_local_modules_its_hooks_import(
    wheels: Path, tmp_path: Path
) -> None:
    from streamc.cli import main

    project = tmp_path / "project"
    project.mkdir()
    (project / "shop.sdl").write_text(
        'app shop\nrecord Order { id: str }\nhooks "hooks.py" {\n    tag(Order) -> str\n}\n'
    )
    (project / "hooks.py").write_text(
        "from shop_tags import PREFIX\n\n\ndef tag(order) -> str:\n    return PREFIX + order.id\n"
    )
    (project / "shop_tags.py").write_text("PREFIX = 'order-'\n")
    assert main(["build", str(project / "shop.sdl"), "-o", str(tmp_path / "out")]) == 0
    worker_wheels = tmp_path / "worker-wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", worker_wheels, tmp_path / "out", cwd=tmp_path)  # fmt: skip
    runtime_deps = _requirement_closure(["streamc-runtime"]) - {"streamc-runtime"}
    venv = _venv_seeing(tmp_path / "worker-venv", runtime_deps)
    _install(venv, *worker_wheels.glob("*.whl"), *wheels.glob("streamc_runtime-*.whl"))
    elsewhere = tmp_path / "elsewhere"  # nothing of the project on the path
    elsewhere.mkdir()
    probe = _run(
        venv / "bin" / "python",
        "-c",
        "from shop_worker.hooks.hooks import tag\n"
        "from shop_worker.records import Order\n"
        "print(tag(Order(id='7')))",
        cwd=elsewhere,
    )
    assert probe.stdout == "order-7\n"
