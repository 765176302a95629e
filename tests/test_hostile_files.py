"""Files an attacker (or a muddled colleague) hands the command: pipes, devices, folders, text in an encoding
that only looks like Windows-1252. Each goes through the real CLI: exit 2, one line that says what and how to
fix it, no traceback, no hang (a FIFO that blocked would hit the subprocess timeout), no report written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkonboard.errors import InputError
from bulkonboard.sheets.inputfile import read_regular_file
from bulkonboard.sheets.reader import read_sheet

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
DOMAINS = SAMPLES / "domains.csv"
CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"


def bulkonboard(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULKONBOARD_")}
    return subprocess.run(
        [sys.executable, "-m", "bulkonboard.cli.commands", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        stdin=subprocess.DEVNULL,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def good_sheet(tmp_path: Path) -> Path:
    path = tmp_path / "good.csv"
    path.write_text(
        "userPrincipalName,displayName,usageLocation,password\njane@contoso.com,Jane,US,Str0ng!Pass001\n",
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------------------- regular files only

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


@needs_fifo
def test_a_fifo_as_input_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "hires.csv"
    os.mkfifo(fifo)
    report = tmp_path / "report.xlsx"
    line = one_line(bulkonboard("validate", fifo, "--domains", DOMAINS, "--report", report, timeout=60))
    assert str(fifo) in line and "named pipe (FIFO)" in line and "only regular files" in line
    assert not report.exists()


@needs_fifo
def test_a_fifo_as_domains_file_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "domains.csv"
    os.mkfifo(fifo)
    line = one_line(bulkonboard("validate", good_sheet(tmp_path), "--domains", fifo, timeout=60))
    assert str(fifo) in line and "named pipe (FIFO)" in line and "domains file" in line


@needs_fifo
def test_a_fifo_as_sandbox_data_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "sandbox.toml"
    os.mkfifo(fifo)
    line = one_line(
        bulkonboard("validate", good_sheet(tmp_path), "--customer", CONTOSO, "--sandbox", "--sandbox-data", fifo, timeout=60)
    )
    assert str(fifo) in line and "named pipe (FIFO)" in line and "sandbox data file" in line


@needs_fifo
def test_a_fifo_as_standalone_sandbox_data_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "sandbox.toml"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "bulkonboard.sandbox", "--port", "0", "--data", str(fifo)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert "named pipe (FIFO)" in result.stderr


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_device_is_not_read_until_memory_runs_out(tmp_path: Path) -> None:
    """`/dev/zero` never ends; named `hires.csv` (a symlink) it passes the extension check."""
    zero = tmp_path / "hires.csv"
    zero.symlink_to("/dev/zero")
    line = one_line(bulkonboard("run", zero, "--domains", DOMAINS, "--sandbox", "--journal", tmp_path / "j.db"))
    assert str(zero) in line and "character device" in line


def test_a_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "hires.csv"
    folder.mkdir()
    line = one_line(bulkonboard("validate", folder, "--domains", DOMAINS))
    assert str(folder) in line and "directory" in line


@needs_fifo
def test_reader_checks_the_descriptor_it_reads(tmp_path: Path) -> None:
    """The check is fstat on the opened descriptor (opened without blocking), not a stat before the open."""
    fifo = tmp_path / "pipe.xlsx"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="named pipe"):
        read_sheet(fifo)
    with pytest.raises(InputError, match=r"is 93 bytes, over the bound of 10 bytes \(file size\)"):
        read_regular_file(good_sheet(tmp_path), "a test file", limit=10)


# ------------------------------------------------------------------------------------------------ encodings

NAMES = "userPrincipalName,displayName,usageLocation,password\nzoe@contoso.com,Zoë Müller,DE,Str0ng!Pass001\n"


@pytest.mark.parametrize(
    ("name", "raw", "said"),
    [
        ("mac.csv", NAMES.encode("mac_roman"), "cannot be told with confidence (it reads like Mac Roman"),
        ("mac-nordic.csv", NAMES.replace("Zoë Müller", "Björn Sjögren").encode("mac_roman"), "Mac Roman"),
        (
            "sjis.csv",
            NAMES.replace("Zoë Müller", "田中 愛子").encode("shift_jis")
            + "aiko@contoso.com,山田 太郎,JP,Str0ng!Pass002\n".encode("shift_jis"),
            "Shift-JIS",
        ),
        ("katakana.csv", NAMES.replace("Zoë Müller", "タナカ アイコ").encode("shift_jis"), "Shift-JIS"),
        ("sjis-cut.csv", NAMES.replace("Zoë Müller", "田中").encode("shift_jis").rstrip(b"\n")[:-1], "cannot be told"),
        ("utf8-cut.csv", NAMES.encode("utf-8").rstrip(b"\n")[:-1] + b"Zo" + "ë".encode()[:1], "not valid UTF-8 (line 2"),
        (
            "utf8-then-sjis.csv",
            NAMES.encode("utf-8") + "aiko@contoso.com,田中 愛子,JP,Str0ng!Pass002\n".encode("shift_jis"),
            "Shift-JIS",
        ),
    ],
)
def test_an_uncertain_encoding_is_refused_not_guessed(tmp_path: Path, name: str, raw: bytes, said: str) -> None:
    path = tmp_path / name
    path.write_bytes(raw)
    report = tmp_path / "report.xlsx"
    line = one_line(bulkonboard("validate", path, "--domains", DOMAINS, "--report", report))
    assert str(path) in line and said in line
    assert "save it again as 'CSV UTF-8'" in line
    assert not report.exists()
    assert "Zo‘" not in line and "MŸller" not in line


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("cp1252", b"")],
)
def test_certain_encodings_still_read(tmp_path: Path, encoding: str, prefix: bytes) -> None:
    path = tmp_path / "names.csv"
    display = "Zoë Müller, Núñez O’Brien, Straße, Lefèvre, Cœur"
    path.write_bytes(prefix + NAMES.replace("Zoë Müller", f'"{display}"').encode(encoding))
    assert read_sheet(path).frame["displayName"].tolist() == [display]
    report = tmp_path / "report.xlsx"
    result = bulkonboard("validate", path, "--domains", DOMAINS, "--report", report)
    assert result.returncode == 0, result.stderr


def test_a_mac_roman_domains_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "domains.csv"
    path.write_bytes("domain,authenticationType,note\ncontoso.com,Managed,Zoë Müller's\n".encode("mac_roman"))
    line = one_line(bulkonboard("validate", good_sheet(tmp_path), "--domains", path))
    assert "Mac Roman" in line and "CSV UTF-8" in line


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Zoë Müller", "mac_roman"),
        ("José Jiménez", "mac_roman"),
        ("François Lefèvre", "mac_roman"),
        ("O’Brien", "mac_roman"),
        ("田中 愛子", "shift_jis"),
        ("ﾀﾅｶ ｱｲｺ", "shift_jis"),  # half-width katakana: single bytes that are letters in Windows-1252
    ],
)
def test_decode_refuses_what_windows_1252_would_garble(tmp_path: Path, text: str, encoding: str) -> None:
    from bulkonboard.sheets.textencoding import decode

    raw = f"userPrincipalName,displayName\na@contoso.com,{text}\n".encode(encoding)
    with pytest.raises(InputError, match="cannot be told with confidence"):
        decode(tmp_path / "x.csv", raw)


@pytest.mark.parametrize(
    "text",
    [
        "Zoë Müller", "José Jiménez", "Straße", "O’Brien", "Núñez", "Sales – EMEA", "Pa€€word1", "GARCÍA",
        "Hélène Cœur",  # "Cœur" alone also reads as Mac Roman "Cúur": refused, as too close to call
    ],
)
def test_decode_reads_genuine_windows_1252(tmp_path: Path, text: str) -> None:
    from bulkonboard.sheets.textencoding import decode

    raw = f"userPrincipalName,displayName\na@contoso.com,{text}\n".encode("cp1252")
    assert decode(tmp_path / "x.csv", raw)[0].splitlines()[1] == f"a@contoso.com,{text}"
