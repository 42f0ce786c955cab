"""Every file in deploy/ is checked by the tool that judges its kind, offline: the systemd
unit by ``systemd-analyze verify``, the Kubernetes manifests against the Kubernetes OpenAPI
schemas (``kubernetes-validate``), the compose file by ``docker compose config`` where the
compose plugin is installed and against the Compose Specification's JSON schema in any case,
and the Dockerfile by hadolint and by what it must say (entrypoint, a numeric non-root user).
Each check is also shown to fail on a broken copy, so a silent tool cannot pass it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"
BIN = Path(sys.executable).parent


def _run(*argv: str, cwd: Path | None = None) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


# --- systemd ----------------------------------------------------------------------------


def _verify_unit(text: str, root: Path) -> tuple[int, str]:
    """``systemd-analyze verify`` of ``text`` as /etc/systemd/system/lockgate.service in a
    root holding the system's own units and ``lockgate`` where the unit runs it (the
    installed entry point), so the unit's commands are checked too."""
    units = root / "etc/systemd/system"
    if not units.exists():
        units.mkdir(parents=True)
        (root / "usr/lib/systemd").mkdir(parents=True)
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        (root / "usr/local/bin").mkdir(parents=True)
        shutil.copy2(BIN / "lockgate", root / "usr/local/bin/lockgate")
    unit = units / "lockgate.service"
    unit.write_text(text)
    return _run("systemd-analyze", "verify", f"--root={root}", str(unit), cwd=root)


def test_the_systemd_unit_verifies_clean(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (Debian: systemd)"
    text = (DEPLOY / "systemd/lockgate.service").read_text()
    code, output = _verify_unit(text, tmp_path)
    assert (code, output) == (0, "")  # verify also prints warnings it exits 0 on
    lines = {line.partition("=")[0]: line.partition("=")[2] for line in text.splitlines()}
    assert lines["ExecStart"] == "/usr/local/bin/lockgate serve"
    assert lines["ExecStartPre"] == "/usr/local/bin/lockgate db upgrade"
    assert lines["KillMode"] == "mixed"  # SIGTERM to serve, which stops its workers itself
    assert lines["User"] == "lockgate" and lines["NoNewPrivileges"] == "yes"
    # A broken copy is reported: a misspelt key, a bad value, a missing command.
    for broken in (
        text.replace("Restart=on-failure", "Restart=sometimes"),
        text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
        text.replace("/usr/local/bin/lockgate serve", "/usr/local/bin/lockgated serve"),
    ):
        code, output = _verify_unit(broken, tmp_path)
        assert output, broken


# --- Kubernetes -------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    text = (DEPLOY / "kubernetes/lockgate.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_the_kubernetes_manifests_match_the_openapi_schemas() -> None:
    docs = _manifests()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {claim["metadata"]["name"]}
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica's recordings
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: unknown fields too
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# --- compose ----------------------------------------------------------------------------


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    return docker is not None and _run(docker, "compose", "version")[0] == 0


def _schema_check(path: Path) -> tuple[int, str]:
    """The file against the Compose Specification's schema (check-jsonschema's vendored
    copy: offline)."""
    return _run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))


def test_the_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    path = DEPLOY / "compose.yaml"
    code, output = _schema_check(path)
    assert code == 0, output
    if _compose_plugin():  # not on the machine these tests were written on: see deploy/
        code, output = _run("docker", "compose", "-f", str(path), "config", "--quiet")
        assert code == 0, output
    compose = yaml.safe_load(path.read_text())
    nodes = {k: v for k, v in compose["services"].items() if k.startswith("node")}
    assert len(nodes) == 2
    envs = [dict(v["environment"]) for v in nodes.values()]
    assert len({e["LOCKGATE_SERVER_NODE_NAME"] for e in envs}) == 2
    assert len({e["LOCKGATE_DATABASE_URL"] for e in envs}) == 1  # one database
    assert all(e["LOCKGATE_SERVER_DATA_DIR"] == "/var/lib/lockgate" for e in envs)
    for node in nodes.values():
        assert "./lockgate-data:/var/lib/lockgate" in node["volumes"]  # one host/master key
        assert node["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    broken = tmp_path / "compose.yaml"
    broken.write_text(path.read_text().replace("depends_on:", "depend_on:", 1))
    assert _schema_check(broken)[0] != 0


# --- Dockerfile -------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions, (NAME, arguments): continuation lines joined, comments
    dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = pending + line, ""
        name, _, arg = line.partition(" ")
        steps.append((name.upper(), " ".join(arg.split())))
    return steps


def test_the_dockerfile_lints_clean_and_runs_lockgate_as_a_numeric_non_root_user(
    tmp_path: Path,
) -> None:
    path = DEPLOY / "Dockerfile"
    code, output = _run(str(BIN / "hadolint"), "--no-color", str(path))
    assert (code, output) == (0, "")
    steps = instructions(path.read_text())
    assert steps[-1] == ("CMD", '["serve"]')
    assert ("ENTRYPOINT", '["lockgate"]') in steps
    users = [arg for name, arg in steps if name == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) > 0
    last_user = max(i for i, (name, _) in enumerate(steps) if name == "USER")
    assert all(name != "RUN" for name, _ in steps[last_user:])  # nothing runs as root after
    assert any(name == "HEALTHCHECK" and "/healthz" in arg for name, arg in steps)
    broken = tmp_path / "Dockerfile"
    broken.write_text(path.read_text().replace('CMD ["serve"]', "CMD serve"))
    assert _run(str(BIN / "hadolint"), "--no-color", str(broken))[0] != 0
