"""bulkonboard installs outside a clone: the wheel that `pipx install` takes carries its data files, and the
command it installs runs `make demo`'s command in a folder that holds nothing but the sample sheet.

Slow (30 to 70 s: a wheel built, a fresh venv made), so marked `slow`; it runs in CI (`make test` runs every test).
No network: the wheel is built with the venv's own setuptools (`--no-build-isolation --no-index`); the fresh venv
gets the wheel alone (`--no-deps`) and sees the dependencies of the venv under test through a `.pth` line, so
`pip check` there proves the wheel's declared dependencies are met, and the package imported is the wheel's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from bulkonboard import __version__
from tests.support import CONTOSO, ROOT, clean_env, sheet_rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def sh(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env or clean_env(),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bulkonboard` command of a fresh venv that holds the wheel built from this tree."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"  # a copy: building leaves build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "bulkonboard", source / "bulkonboard", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = work / "wheels"
    built = sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "-w", wheels, source, cwd=work)  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("bulkonboard-*.whl")

    fresh = work / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    site = Path(
        sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=work).stdout.strip()
    )
    (site / "under_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    added = sh(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=work)
    assert added.returncode == 0, added.stdout + added.stderr
    check = sh(python, "-m", "pip", "check", cwd=work)
    assert check.returncode == 0, check.stdout  # every dependency the wheel declares is there
    where = sh(python, "-c", "import bulkonboard; print(bulkonboard.__file__)", cwd=work).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's copy, not the tree under test
    return fresh / "bin" / "bulkonboard"


def test_the_installed_command_says_its_version(installed: Path, tmp_path: Path) -> None:
    result = sh(installed, "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"bulkonboard, version {__version__}"


def test_make_demos_command_runs_from_the_wheel_with_its_own_data(installed: Path, tmp_path: Path) -> None:
    """Only the sheet is here: the sandbox's data, the country list and the template come from the wheel."""
    (tmp_path / "samples").mkdir()
    shutil.copy2(ROOT / "samples" / "new_hires.xlsx", tmp_path / "samples" / "new_hires.xlsx")
    env = clean_env(XDG_STATE_HOME=str(tmp_path / "state"))
    result = sh(installed, "run", "samples/new_hires.xlsx", "--sandbox", "--customer", CONTOSO,
                "--results", "out/demo-results.xlsx", cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 1, result.stderr  # the sample's deliberate mistakes: the demo working
    assert "Traceback" not in result.stderr
    statuses = [row["status"] for row in sheet_rows(tmp_path / "out" / "demo-results.xlsx")]
    assert statuses.count("created") == 26 and statuses.count("skipped") == 1, statuses
    template = sh(installed, "template", "out/template.xlsx", cwd=tmp_path, env=env)
    assert template.returncode == 0 and (tmp_path / "out" / "template.xlsx").is_file(), template.stderr
