"""The import rules of docs/ARCHITECTURE.md, as `make lint` enforces them (pyproject.toml's import-linter
contracts), and the CLI's start, which must load no HTTP stack: `validate --domains` and `--help` never talk to a
service, and a scheduler pays for every module loaded at every start.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, clean_env

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """The contracts of `cwd`'s pyproject.toml, checked against the package found first on the path: `cwd`'s."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
        env=clean_env(PYTHONPATH=str(cwd)),
    )  # fmt: skip


def test_the_cli_start_loads_neither_aiohttp_nor_aiolimiter() -> None:
    probe = (
        "import sys\n"
        "import bulkonboard.cli.commands\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('aiohttp', 'aiolimiter')}))\n"
        "print('bulkonboard.sandbox' in sys.modules, 'bulkonboard.sending.pipeline' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, env=clean_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "False False"]


def test_the_package_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "chain"),
    [
        ("journal/store.py", "from ..sending import pipeline", "bulkonboard.journal.store -> bulkonboard.sending"),
        ("sending/pipeline.py", "from ..cli import console", "bulkonboard.sending.pipeline -> bulkonboard.cli"),
        ("auth/tokens.py", "from ..service import partnercenter", "bulkonboard.auth.tokens -> bulkonboard.service"),
        ("app/runner.py", "from .. import sandbox", "bulkonboard.app.runner -> bulkonboard.sandbox"),
        ("sandbox/data.py", "from ..sheets import validation", "bulkonboard.sandbox.data -> bulkonboard.sheets"),
    ],
    ids=["journal->sending", "sending->cli", "auth->service", "app->sandbox", "sandbox->validation"],
)
def test_an_import_against_the_rules_fails_the_lint_and_names_its_chain(
    tmp_path: Path, module: str, planted: str, chain: str
) -> None:
    # The contracts can fail: a copy of the package with one forbidden import planted breaks them.
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "bulkonboard", tmp_path / "bulkonboard", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "bulkonboard" / module
    target.write_text(target.read_text("utf-8") + f"\n{planted}  # noqa\n", "utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert chain in result.stdout, result.stdout
