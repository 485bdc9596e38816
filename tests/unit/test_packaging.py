"""Install recipes agree: the Dockerfile installs the same requirement files as `make install`,
pyproject.toml declares the same runtime requirements as requirements/requirements.txt, and torch
is pinned so that no requirement can pull a CUDA build onto a CPU machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.meta


def requirements_txt(path: Path) -> dict[str, Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    reqs = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(req.name): req for req in reqs}


def pyproject_dependencies() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(REPO / "pyproject.toml", "rb") as handle:
        deps = tomllib.load(handle)["project"]["dependencies"]
    reqs = [Requirement(dep) for dep in deps]
    return {canonicalize_name(req.name): req for req in reqs}


def requirement_files(text: str) -> set[str]:
    return set(re.findall(r"-r\s+(requirements/[\w.-]+\.txt)", text))


def test_dockerfile_installs_the_same_requirement_files_as_make_install():
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    make_files = requirement_files(makefile)
    assert make_files == {"requirements/requirements.txt", "requirements/requirements-dev.txt"}
    assert requirement_files(dockerfile) == make_files
    for text in (makefile, dockerfile):
        assert "--no-build-isolation" in text  # DeepSpeed builds against the installed torch
    assert "COPY requirements/ requirements/" in dockerfile


def test_torch_is_range_pinned_and_installed_first():
    reqs = (REPO / "requirements" / "requirements.txt").read_text()
    torch_line = next(line for line in reqs.splitlines() if line.startswith("torch"))
    assert "<" in torch_line, "an open-ended torch requirement pulls the newest CUDA build"
    makefile = (REPO / "Makefile").read_text()
    install = makefile[makefile.index("$(STAMP): $(REQS)"):]
    assert install.index("TORCH_SPEC") < install.index("-r requirements/requirements.txt")


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "make test" in (REPO / "README.md").read_text()


def test_pyproject_declares_the_runtime_requirements_of_requirements_txt():
    pinned = requirements_txt(REPO / "requirements" / "requirements.txt")
    declared = pyproject_dependencies()
    assert "torch" in pinned
    missing = sorted(set(pinned) - set(declared))
    assert not missing, f"in requirements/requirements.txt but not in pyproject.toml: {missing}"
    extra = sorted(set(declared) - set(pinned))
    assert not extra, f"in pyproject.toml but not in requirements/requirements.txt: {extra}"
    differ = {name: (str(pinned[name].specifier), str(declared[name].specifier))
              for name in pinned if pinned[name].specifier != declared[name].specifier}
    assert not differ, f"ranges differ (requirements.txt, pyproject.toml): {differ}"
