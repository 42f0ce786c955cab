"""Configuration loading: defaults, overrides, unknown keys, the example file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    cfg_file = tmp_path / "lockgate.toml"
    cfg_file.write_text('[server]\ndata_dir = "data"\n')
    cfg = load_config(cfg_file, environ={})
    assert cfg.server.data_dir == tmp_path / "data"
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'lockgate.db'}"
    assert cfg.master_key == f"file:{tmp_path / 'data' / 'master.key'}"
    assert cfg.recordings_path == tmp_path / "data" / "recordings"
    assert str(cfg.server.ssh_listen) == "0.0.0.0:2222"
    assert cfg.max_failed_logins == 5
    assert cfg.rules == ()


def test_example_file_loads_and_documents_every_key(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config.example.toml", environ={})
    assert [r.name for r in cfg.rules] == ["dev-prod"]
    assert [r.name for r in cfg.anomaly_rules] == ["wipe"]
    text = (ROOT / "config.example.toml").read_text()
    from gateway.config import _SCHEMA

    for section, keys in _SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} =" in text, f"{section}.{key} is not documented"


def test_environment_overrides(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        environ={
            "LOCKGATE_SERVER_SSH_LISTEN": "127.0.0.1:2022",
            "LOCKGATE_DATABASE_URL": "postgresql+asyncpg://u:pw@db/lg",
            "LOCKGATE_AUTH_MAX_FAILED_LOGINS": "3",
            "LOCKGATE_CONFIG": "ignored.toml",
            "LOCKGATE_URL": "http://x",
        },
    )
    assert cfg.server.ssh_listen.port == 2022
    assert cfg.database_url == "postgresql+asyncpg://u:pw@db/lg"
    assert cfg.max_failed_logins == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nssh_lisen = '1'\n", "unknown key server.ssh_lisen"),
        ("[servr]\n", "unknown section [servr]"),
        ("[server]\nssh_listen = 'nope'\n", "server.ssh_listen: expected HOST:PORT"),
        ("[auth]\nmax_failed_logins = 'x'\n", "auth.max_failed_logins must be a int"),
        ("[auth]\nmax_failed_logins = 0\n", "at least 1"),
        ("[server\n", "not valid TOML"),
        ("[[rules]]\nname = 'r'\nroles = ['dev']\nbogus = 1\n", "bogus"),
        ("[[anomaly.rules]]\nname='a'\nmatch='command'\npattern='('\naction='kill'\n", "a"),
        ("[anomaly]\nrulez = []\n", "unknown key anomaly.rulez"),
    ],
)
def test_bad_files_name_source_and_key(tmp_path: Path, text: str, message: str) -> None:
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, environ={})
    assert str(cfg_file) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("LOCKGATE_SERVER_SSH_LISTN", r"names no key of \[server\]"),
        ("LOCKGATE_NOPE_X", "names no configuration section"),
        ("LOCKGATE_AUTH_MAX_FAILED_LOGINS", "must be a whole number"),
    ],
)
def test_bad_environment(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={name: "x"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(Path("/nonexistent/lockgate.toml"), environ={})
