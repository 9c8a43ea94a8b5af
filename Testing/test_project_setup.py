"""The README's two setup commands are what CI runs, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Setup", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]


def test_readme_has_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    install, test = commands
    assert "\n" not in install and "\n" not in test
    assert "SAM2_BUILD_CUDA=0" in install and "--no-build-isolation" in install
    assert test.startswith("python -m pytest")


def test_ci_runs_the_readme_commands_and_nothing_else():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")
                and not line.startswith(("set ", "cd "))]
    assert commands == _setup_commands()


def test_readme_documents_the_demo_and_every_cli_verb():
    from volsam.cli import VERBS

    readme = (ROOT / "README.md").read_text()
    assert "volsam demo" in readme
    for verb in VERBS:
        assert f"volsam {verb}" in readme, verb
