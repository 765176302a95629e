"""Sign-in configuration: environment over file, secrets only by reference, and files others can read refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from bulkonboard.auth.config import (
    DEFAULT_AUTHORITY,
    AuthConfig,
    SecretRef,
    find_config_file,
    load_config,
    write_private,
)
from bulkonboard.errors import AuthError

SECRET = "client-secret-value"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write(path: Path, text: str, file_mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(file_mode)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}


def test_environment_only(tmp_path: Path, cwd: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = base_env(tmp_path) | {
        "BULKONBOARD_TENANT_ID": "partner.onmicrosoft.com",
        "BULKONBOARD_CLIENT_ID": "app-id",
        "BULKONBOARD_CLIENT_SECRET": SECRET,
        "BULKONBOARD_REFRESH_TOKEN": "rt-value",
    }
    config = load_config(env, cwd=cwd, home=home)
    assert (config.tenant_id, config.client_id) == ("partner.onmicrosoft.com", "app-id")
    assert config.client_secret == SecretRef(env="BULKONBOARD_CLIENT_SECRET")
    assert config.client_secret.read(env) == SECRET
    assert config.refresh_token == SecretRef(env="BULKONBOARD_REFRESH_TOKEN")
    assert config.authority == DEFAULT_AUTHORITY and config.microsoft_authority
    assert config.verify is True and config.confidential
    assert config.token_cache == tmp_path / "state" / "bulkonboard" / "msal_cache.json"
    assert config.status_file == tmp_path / "state" / "bulkonboard" / "signin.json"
    assert config.source() == "the environment"
    # The config names where secrets are; its repr never holds one.
    assert SECRET not in repr(config) and "rt-value" not in repr(config)


def test_missing_ids_name_the_variables(tmp_path: Path, cwd: Path, home: Path) -> None:
    with pytest.raises(AuthError) as caught:
        load_config(base_env(tmp_path) | {"BULKONBOARD_CLIENT_ID": "app"}, cwd=cwd, home=home)
    assert (
        "BULKONBOARD_TENANT_ID" in caught.value.message
        and "BULKONBOARD_CLIENT_ID" not in caught.value.message
    )
    assert caught.value.exit_code == 3


CONFIG = """
[auth]
tenant_id = "file-tenant"
client_id = "file-app"
client_secret_file = "secrets/client_secret"
refresh_token_env = "MY_RT"
authority = "https://login.example.test/"
ca_bundle = "ca.pem"
token_cache = "cache/msal.json"
"""


def test_config_file_in_the_working_folder_with_relative_paths(tmp_path: Path, cwd: Path, home: Path) -> None:
    config_file = write(cwd / "bulkonboard.toml", CONFIG)
    write(cwd / "secrets" / "client_secret", SECRET + "\n")
    write(cwd / "ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644)  # a CA is public: any mode
    env = base_env(tmp_path) | {"MY_RT": "the-refresh-token"}
    config = load_config(env, cwd=cwd, home=home)
    assert config.config_file == config_file and config.source() == f"config file {config_file}"
    assert (config.tenant_id, config.client_id) == ("file-tenant", "file-app")
    assert config.client_secret == SecretRef(file=cwd / "secrets" / "client_secret")
    assert config.client_secret.read() == SECRET  # the trailing newline of an editor is not part of it
    assert (
        config.refresh_token == SecretRef(env="MY_RT")
        and config.refresh_token.read(env) == "the-refresh-token"
    )
    assert config.authority == "https://login.example.test" and not config.microsoft_authority
    assert config.authority_for("t1") == "https://login.example.test/t1"
    assert config.verify == str(cwd / "ca.pem")
    assert config.token_cache == cwd / "cache" / "msal.json"


def test_environment_wins_over_the_file(tmp_path: Path, cwd: Path, home: Path) -> None:
    write(cwd / "bulkonboard.toml", CONFIG)
    write(cwd / "ca.pem", "x")
    env = base_env(tmp_path) | {
        "BULKONBOARD_TENANT_ID": "env-tenant",
        "BULKONBOARD_CLIENT_SECRET_FILE": str(write(tmp_path / "other_secret", "other")),
        "BULKONBOARD_AUTHORITY": "https://login.microsoftonline.com",
    }
    config = load_config(env, cwd=cwd, home=home)
    assert config.tenant_id == "env-tenant" and config.client_id == "file-app"
    assert config.client_secret == SecretRef(file=tmp_path / "other_secret")
    assert config.authority == DEFAULT_AUTHORITY


def test_user_config_under_xdg_config_home_and_explicit_config(tmp_path: Path, cwd: Path, home: Path) -> None:
    env = base_env(tmp_path)
    user_file = write(
        tmp_path / "xdg-config" / "bulkonboard" / "config.toml", '[auth]\ntenant_id="u"\nclient_id="c"\n'
    )
    assert find_config_file(env, cwd, home) == user_file
    assert load_config(env, cwd=cwd, home=home).tenant_id == "u"
    # Without XDG_CONFIG_HOME: ~/.config.
    home_file = write(
        home / ".config" / "bulkonboard" / "config.toml", '[auth]\ntenant_id="h"\nclient_id="c"\n'
    )
    assert find_config_file({}, cwd, home) == home_file
    # The working folder's file comes first, and an explicit one before both.
    local = write(cwd / "bulkonboard.toml", '[auth]\ntenant_id="l"\nclient_id="c"\n')
    assert find_config_file(env, cwd, home) == local
    explicit = write(tmp_path / "elsewhere.toml", '[auth]\ntenant_id="e"\nclient_id="c"\n')
    assert load_config(env | {"BULKONBOARD_CONFIG": str(explicit)}, cwd=cwd, home=home).tenant_id == "e"
    with pytest.raises(AuthError, match="no such config file"):
        load_config(env | {"BULKONBOARD_CONFIG": str(tmp_path / "missing.toml")}, cwd=cwd, home=home)


def test_a_config_file_others_can_read_is_refused_with_the_fix(tmp_path: Path, cwd: Path, home: Path) -> None:
    config_file = write(cwd / "bulkonboard.toml", CONFIG, 0o644)
    with pytest.raises(AuthError) as caught:
        load_config(base_env(tmp_path), cwd=cwd, home=home)
    assert f"chmod 600 {config_file}" in caught.value.message and "0644" in caught.value.message
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, loose: int) -> None:
    secret_file = write(tmp_path / "secret", SECRET, loose)
    with pytest.raises(AuthError) as caught:
        SecretRef(file=secret_file).read()
    assert f"chmod 600 {secret_file}" in caught.value.message
    assert SECRET not in caught.value.message
    secret_file.chmod(0o600)
    assert SecretRef(file=secret_file).read() == SECRET
    secret_file.chmod(0o400)
    assert SecretRef(file=secret_file).read() == SECRET


def test_missing_or_empty_secrets_say_where_they_were_looked_for(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="environment variable NOPE is not set"):
        SecretRef(env="NOPE").read({})
    with pytest.raises(AuthError, match="no such secret file"):
        SecretRef(file=tmp_path / "absent").read()
    with pytest.raises(AuthError, match="is empty"):
        SecretRef(file=write(tmp_path / "empty", "\n")).read()


@pytest.mark.parametrize("key", ["client_secret", "refresh_token"])
def test_a_literal_secret_in_the_file_is_refused(tmp_path: Path, cwd: Path, home: Path, key: str) -> None:
    write(cwd / "bulkonboard.toml", f'[auth]\ntenant_id="t"\nclient_id="c"\n{key}="do-not-put-it-here"\n')
    with pytest.raises(AuthError) as caught:
        load_config(base_env(tmp_path), cwd=cwd, home=home)
    assert f"{key}_file" in caught.value.message and "do-not-put-it-here" not in caught.value.message


def test_bad_files_and_values(tmp_path: Path, cwd: Path, home: Path) -> None:
    env = base_env(tmp_path)
    write(cwd / "bulkonboard.toml", '[auth]\ntenant_id="t"\nclient_id="c"\nclient_secret_fil="x"\n')
    with pytest.raises(AuthError, match="unknown key.*client_secret_fil"):
        load_config(env, cwd=cwd, home=home)
    write(cwd / "bulkonboard.toml", "[auth\n")
    with pytest.raises(AuthError, match="not a valid TOML"):
        load_config(env, cwd=cwd, home=home)
    (cwd / "bulkonboard.toml").unlink()
    ids = {"BULKONBOARD_TENANT_ID": "t", "BULKONBOARD_CLIENT_ID": "c"}
    with pytest.raises(AuthError, match="must be an https URL"):
        load_config(env | ids | {"BULKONBOARD_AUTHORITY": "http://127.0.0.1:8080"}, cwd=cwd, home=home)
    with pytest.raises(AuthError, match="no such CA bundle"):
        load_config(env | ids | {"BULKONBOARD_CA_BUNDLE": str(tmp_path / "nope.pem")}, cwd=cwd, home=home)


def test_public_client_when_no_secret_is_configured(tmp_path: Path, cwd: Path, home: Path) -> None:
    config = load_config(
        base_env(tmp_path) | {"BULKONBOARD_TENANT_ID": "t", "BULKONBOARD_CLIENT_ID": "c"}, cwd=cwd, home=home
    )
    assert isinstance(config, AuthConfig) and not config.confidential and config.client_secret is None


def test_write_private_is_0600_from_creation_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "cache.json"
    write_private(target, "one")
    assert target.read_text() == "one" and mode(target) == 0o600
    assert mode(target.parent) == 0o700
    target.chmod(0o644)  # someone loosened it: the next write puts it back
    write_private(target, "two")
    assert target.read_text() == "two" and mode(target) == 0o600
    assert sorted(os.listdir(target.parent)) == ["cache.json"]  # no temporary file left behind


def test_write_private_never_shows_the_content_to_others_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file must already be 0600 when the content goes in, whatever the umask.
    seen: list[int] = []
    real_fdopen = os.fdopen

    def spying_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", spying_fdopen)
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        write_private(tmp_path / "secret.json", "x")
    finally:
        os.umask(old_umask)
    assert seen == [0o600]
