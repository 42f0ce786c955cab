"""The drift scan: what is on a provisioned target that no live row explains.

Listed on the target first, then compared with the live rows (a creation inserts its row
before its useradd, and a row stays live until its removal is confirmed, so nothing being
made or taken away can look like drift). An ``lg-`` account with a UID in the target's range
is Lockgate's and is removed through the state machine; one outside the range is only
reported (someone else's account that happens to share the prefix). A ``lockgate-`` drop-in
whose grant has no live row is removed at once. Everything found is audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.provision import steps
from gateway.provision.store import LIVE, ProvisionStore

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.provision.remote import TargetShell
    from policy.models import Clock, Target

ACTOR = "lockgate"


async def scan(
    shell: TargetShell, target: Target, store: ProvisionStore, audit: AuditLog, clock: Clock
) -> int:
    """One target's drift: returns how many things were found (and removed or reported)."""
    accounts = []
    for line in (await shell.run(steps.list_accounts())).stdout.split():
        name, _, number = line.partition(":")
        accounts.append((name, int(number) if number.isdigit() else None))
    dropins = (await shell.run(steps.list_dropins())).stdout.split()
    live = await store.list(target=target.name, states=LIVE)
    known_accounts = {i.account for i in live if i.kind == "account"}
    known_files = {steps.sudoers_file(i.grant_id).rsplit("/", 1)[1] for i in live}
    found = 0
    for name, uid in accounts:
        if name in known_accounts:
            continue
        found += 1
        ours = (
            uid is not None
            and target.uid_min <= uid <= target.uid_max
            and steps.ORPHAN.match(name) is not None
        )
        if ours:
            await store.adopt(target.name, name, uid, clock(), "an lg- account without a grant")
        else:
            await audit.record(
                actor=ACTOR,
                action="provision.drift",
                subject=f"{name}@{target.name}",
                details={"uid": uid, "found": "an lg- account outside the UID range: left alone"},
            )
    for file in dropins:
        if file.removesuffix(".new") in known_files:
            continue
        found += 1
        path = f"{steps.SUDOERS_DIR}/{file}"
        await shell.run_all(steps.remove_sudoers(path.removesuffix(".new")))
        await audit.record(
            actor=ACTOR,
            action="provision.drift",
            subject=f"{file}@{target.name}",
            details={"found": "a lockgate- sudoers drop-in without a grant: removed"},
        )
    return found
