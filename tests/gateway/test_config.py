"""Configuration loading: defaults, overrides, unknown keys, the example file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.oidc.settings import parse_provider

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
    assert cfg.server.ssh_fastpath is True
    assert cfg.rules == ()


def test_example_file_loads_and_documents_every_key(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config.example.toml", environ={})
    assert [r.name for r in cfg.rules] == ["dev-prod"]
    assert [r.name for r in cfg.anomaly_rules] == ["wipe"]
    assert [p.name for p in cfg.oidc] == ["corp"]
    (corp,) = cfg.oidc
    table = tomllib.loads((ROOT / "config.example.toml").read_text())["auth"]["oidc"][0]
    from gateway.oidc.settings import _KEYS

    assert set(table) == _KEYS, "every [[auth.oidc]] key is documented"
    assert corp == parse_provider(
        {k: table[k] for k in ("name", "issuer", "client_id")}
        | {"role_mappings": table["role_mappings"]}
    ), "the example shows the defaults"
    text = (ROOT / "config.example.toml").read_text()
    from gateway.config import _SCHEMA

    example = tomllib.loads(text)
    for section, keys in _SCHEMA.items():
        assert f"[{section}]" in text
        for key, (_, default) in keys.items():
            assert f"\n{key} =" in text, f"{section}.{key} is not documented"
            if default is not None:
                assert example[section][key] == default, f"{section}.{key}: not the default"


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
        ("[server]\nssh_fastpath = 'no'\n", "server.ssh_fastpath must be true or false"),
        ("[server]\nssh_fastpath = 0\n", "server.ssh_fastpath must be true or false"),
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
        ("LOCKGATE_DATABASE_UR", r"names no key of \[database\]"),
        ("LOCKGATE_AUTH_MAX_FAILED_LOGINS", "must be a whole number"),
        ("LOCKGATE_SERVER_SSH_FASTPATH", "must be true or false"),
        ("LOCKGATE_RULES_NAME", "set in the file only"),
        ("LOCKGATE_ANOMALY_RULES", "set in the file only"),
    ],
)
def test_bad_environment(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={name: "x"})


def test_a_file_can_turn_the_ssh_fast_path_off(tmp_path: Path) -> None:
    cfg_file = tmp_path / "lockgate.toml"
    cfg_file.write_text("[server]\nssh_fastpath = false\n")
    assert load_config(cfg_file, environ={}).server.ssh_fastpath is False
    on = {"LOCKGATE_SERVER_SSH_FASTPATH": "true"}
    assert load_config(cfg_file, environ=on).server.ssh_fastpath is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("FALSE", False),
        (" Yes ", True),
    ],
)
def test_boolean_overrides_take_true_false_1_0_yes_no(value: str, expected: bool) -> None:
    cfg = load_config(None, environ={"LOCKGATE_SERVER_SSH_FASTPATH": value})
    assert cfg.server.ssh_fastpath is expected


@pytest.mark.parametrize("value", ["", "on", "off", "2", "ture", "hunter2-secret"])
def test_other_boolean_overrides_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"LOCKGATE_SERVER_SSH_FASTPATH": value})
    message = str(info.value)
    assert message == (
        "environment: LOCKGATE_SERVER_SSH_FASTPATH must be true or false (or 1/0, yes/no)"
    )


@pytest.mark.parametrize(
    "name",
    [
        "LOCKGATE_DEBUG",
        "LOCKGATE_CONFIG",
        "LOCKGATE_URL",
        "LOCKGATE_TOKEN",
        "LOCKGATE_TEST_DATABASE_URL",
        "LOCKGATE_PROBE",
    ],
)
def test_variables_outside_the_sections_are_not_overrides(name: str) -> None:
    """LOCKGATE_DEBUG=1, which the command line's internal-error message recommends, used to
    fail every command as an unknown configuration key."""
    assert load_config(None, environ={name: "1"}) == load_config(None, environ={})


def test_lockgate_debug_in_the_real_environment_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_DEBUG", "1")
    monkeypatch.setenv("LOCKGATE_SERVER_NODE_NAME", "from-env")
    assert load_config(None).server.node_name == "from-env"


def test_no_command_line_variable_is_taken_for_a_configuration_key() -> None:
    """Every LOCKGATE_* name the command line reads itself is left alone by the configuration,
    so a new one that began with a section name (LOCKGATE_SERVER_...) fails here first."""
    text = "".join(f.read_text() for f in sorted((ROOT / "gateway" / "cli").glob("*.py")))
    names = set(re.findall(r"\b(LOCKGATE_[A-Z0-9_]+)", text))
    assert "LOCKGATE_DEBUG" in names
    for name in names:
        assert load_config(None, environ={name: "1"}) == load_config(None, environ={}), name


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(Path("/nonexistent/lockgate.toml"), environ={})


def test_scale_out_settings(tmp_path: Path) -> None:
    import ipaddress
    import os

    assert load_config(None, environ={}).server.workers == (os.cpu_count() or 1)  # 0: per core
    one = load_config(None, environ={"LOCKGATE_SERVER_WORKERS": "1"}).server
    assert one.workers == 1 and not one.proxy_protocol and one.trusted_proxies == ()
    path = tmp_path / "lb.toml"
    path.write_text(
        '[server]\nproxy_protocol = true\ntrusted_proxies = ["10.0.0.10", "fd00::/64"]\n'
        "heartbeat_interval = 2\nnode_lost_after = 6\n"
    )
    server = load_config(path, environ={}).server
    assert server.proxy_protocol and server.node_lost_after == 6
    assert server.trusted_proxies == (
        ipaddress.ip_network("10.0.0.10/32"),
        ipaddress.ip_network("fd00::/64"),
    )
    for text, message in (
        ("proxy_protocol = true", "proxy_protocol needs server.trusted_proxies"),
        ('trusted_proxies = ["gw.example.com"]', "trusted_proxies must be addresses or CIDRs"),
        ("heartbeat_interval = 5\nnode_lost_after = 14", "at least 3 times"),
        ("workers = -1", "server.workers must be 0"),
    ):
        path.write_text(f"[server]\n{text}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path, environ={})
