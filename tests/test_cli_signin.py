"""The nightly sign-in rehearsed end to end: `bulkonboard sandbox --tls` as the authority and the service, MSAL's
own code (unpatched) in a `bulkonboard run` process, configured by a 0600 file as README shows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTOSO = "3c9a8f12-5e6b-4c1d-9a7e-2f4b8d6c1e90"


@pytest.fixture
def tls_sandbox(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkonboard.sandbox", "--data", str(ROOT / "samples/sandbox.toml"), "--port", "0",
         "--tls", str(tmp_path / "tls")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BULKONBOARD_")},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on https://"), proc.stderr.read() if proc.stderr else first
        notes = [proc.stdout.readline().strip() for _ in range(3)]
        assert any(str(tmp_path / "tls" / "ca.pem") in note for note in notes)
        yield first.removeprefix("listening on "), tmp_path / "tls"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_nightly_run_signs_in_through_msal_against_the_tls_sandbox(tls_sandbox: tuple[str, Path], tmp_path: Path) -> None:
    url, tls = tls_sandbox
    assert os.stat(tls / "refresh_token").st_mode & 0o777 == 0o600
    secret = tmp_path / "client_secret"
    secret.write_text("sandbox-client-secret\n")
    secret.chmod(0o600)
    config = tmp_path / "bulkonboard.toml"
    config.write_text(
        "[auth]\n"
        'tenant_id = "partner.onmicrosoft.com"\n'
        'client_id = "bulkonboard-sandbox-app"\n'
        f'client_secret_file = "{secret}"\n'
        f'refresh_token_file = "{tls / "refresh_token"}"\n'
        f'authority = "{url}"\n'
        f'ca_bundle = "{tls / "ca.pem"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKONBOARD_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "cfg"))

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bulkonboard.cli.commands", "run", str(ROOT / "samples/new_hires.csv"), "--customer", CONTOSO,
             "--base-url", url, "--graph-url", url + "/graph/{tenant}", "--rate", "100", *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )

    config.chmod(0o644)
    refused = run("--results", str(tmp_path / "never.xlsx"))
    assert refused.returncode == 3 and "chmod 600" in refused.stderr and "Traceback" not in refused.stderr
    config.chmod(0o600)

    result = run("--results", str(tmp_path / "results.xlsx"))
    assert result.returncode == 1, result.stderr  # the sample's deliberate mistakes; everything else created
    rows = list(openpyxl.load_workbook(tmp_path / "results.xlsx")["Rows"].iter_rows(values_only=True))[1:]
    assert sum(1 for r in rows if r[2] == "created") == 26
    cache = tmp_path / "state" / "bulkonboard" / "msal_cache.json"
    assert cache.exists() and os.stat(cache).st_mode & 0o777 == 0o600
    for token in ("sandbox-client-secret", (tls / "refresh_token").read_text().strip()):
        assert token not in result.stderr and token not in result.stdout
