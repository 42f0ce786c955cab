"""The drift scan removes what Lockgate would have made but no live grant explains, and
leaves alone what is not its own."""

from __future__ import annotations

from tests.eventually import eventually
from tests.gateway.provision.conftest import ProvGateway

PLANT = """
useradd -M -u 50500 -p '*' lg-mallory-deadbeef
useradd -M -u 1500 -p '*' lg-backup-1
printf 'lg-mallory-deadbeef ALL=(ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/lockgate-gr-deadbeef0000
chmod 0440 /etc/sudoers.d/lockgate-gr-deadbeef0000
"""


async def test_drift_is_removed_and_audited_and_live_accounts_stay(pgw: ProvGateway) -> None:
    grant = await pgw.grant()
    rc, _, err = await pgw.ssh("alice", "alice+db01", "true")
    assert rc == 0, err
    [live] = await pgw.items("active")
    planted = pgw.target.inside(PLANT)
    assert planted.returncode == 0, planted.stderr

    assert await pgw.services.provisioner.drift_scan() == 3

    async def cleaned() -> bool:
        passwd = pgw.target.passwd()
        return "lg-mallory-deadbeef" not in passwd

    await eventually(cleaned, what="the drifted account removed", timeout=60)
    passwd = pgw.target.passwd()
    assert "lg-backup-1" in passwd  # outside the UID range: not Lockgate's, only reported
    assert live.account in passwd
    assert pgw.target.sudoers_files() == ["README", "lockgate", f"lockgate-{grant}"]
    events = await pgw.services.audit.events()
    drift = sorted(e.subject for e in events if e.action == "provision.drift")
    assert drift == [
        "lg-backup-1@db01",
        "lg-mallory-deadbeef@db01",
        "lockgate-gr-deadbeef0000@db01",
    ]
    assert (await pgw.services.provisioner.store.get(live.id)).state == "active"  # type: ignore[union-attr]
