"""Install recipes agree: the Dockerfile installs the same requirement files as `make install`,
and torch is pinned so that no requirement can pull a CUDA build onto a CPU machine."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
