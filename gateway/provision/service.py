"""Provisioning accounts for sessions and taking them away again.

``session_account`` is what a session on a provisioned target asks before it connects: the
account to log in as, created (ephemeral) or elevated for the grant first if it is not yet.
``reconcile`` is the durable half: every live row is looked at, a row whose grant has ended
(expired, revoked, user or target locked) moves to ``revoking``, a ``creating`` row nobody is
working on any more (its node died) too, and every ``revoking`` row is removed on the target,
retried with backoff until the target confirms nothing is left. Each pass also makes the
account of a grant whose rule says ``provision_at = "approval"`` before its first session
(``provision_approved``). ``run`` does that at start and then whenever a grant ends, access
changes, or a retry is due.

An ephemeral account's only way in is a key the gateway generated for the grant, kept in the
vault under the account's name and deleted with the account: while a target is unreachable
nobody can use the account (the grant has ended, so no session is let through), and the
person never sees the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from gateway.audit import AuditLog
from gateway.db import SessionMaker
from gateway.provision import drift, steps
from gateway.provision.remote import ProvisionError, TargetShell, open_shell
from gateway.provision.store import LIVE, Item, Kind, ProvisionStore, State, UidRangeExhausted
from policy.errors import PolicyError
from policy.models import Clock, Grant, Target
from policy.service import SYSTEM_ACTOR, PolicyService
from vault.errors import VaultError
from vault.secret import Secret
from vault.service import VaultService

log = logging.getLogger(__name__)
ACTOR = "lockgate"
LEASE = timedelta(minutes=5)  # one attempt's hold on a row; a dead node's hold runs out
CREATING_STALE = timedelta(minutes=10)  # a "creating" row untouched this long is orphaned
POLL = timedelta(minutes=1)
DRIFT_EVERY = timedelta(minutes=15)
MAX_UID_TRIES = 5


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s ... capped at 5 minutes: an unreachable target is retried forever."""
    return timedelta(seconds=min(5 * 2 ** min(attempts, 10), 300))


class ProvisionRefused(Exception):
    """The session cannot start: its account could not be provisioned (one line, no secret)."""


EndSessions = Callable[[str, str, str], Awaitable[None]]  # (target, account, reason)


class Provisioner:
    def __init__(
        self,
        maker: SessionMaker,
        audit: AuditLog,
        policy: PolicyService,
        vault: VaultService,
        *,
        node: str,
        clock: Clock,
    ) -> None:
        self.store = ProvisionStore(maker, audit)
        self.audit = audit
        self.policy = policy
        self.vault = vault
        self.node = node
        self.clock = clock
        self.end_sessions: EndSessions | None = None
        self.on_retry: Callable[[Item, str], None] | None = None
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._creating: dict[str, asyncio.Lock] = {}
        self._early: set[str] = set()  # grants provisioned at approval from this node

    def wake(self) -> None:
        self._wake.set()

    # --- sessions -------------------------------------------------------------------
    def upstream_name(self, user: str, target: Target, account: str, grant_id: str | None) -> str:
        """The account a session logs in as: the grant's ephemeral account on an ephemeral
        target, else the grant's own account."""
        if target.provision == "ephemeral" and grant_id:
            return steps.account_name(user, grant_id)
        return account

    async def session_account(
        self, user: str, target: Target, account: str, grant_id: str | None
    ) -> str:
        """Make sure the grant's account exists (ephemeral) or is elevated (elevate) and
        return the name to log in as. Raises ProvisionRefused (the session is refused) when
        it cannot be; what was half made is then taken away by the reconciler."""
        if target.provision == "none":
            return account
        if grant_id is None:
            raise ProvisionRefused(f"{target.name} provisions accounts only for a grant")
        name = self.upstream_name(user, target, account, grant_id)
        kind: Kind = "account" if target.provision == "ephemeral" else "elevation"
        try:
            grant = await self.policy.get_grant(SYSTEM_ACTOR, grant_id)
        except PolicyError:
            raise ProvisionRefused("the grant no longer exists") from None
        rule = self.policy.rule(grant.rule)
        groups = rule.groups if rule else ()
        sudo = rule.sudo if rule else ()
        key = f"{target.name}/{kind}/{name}/{grant_id}"
        lock = self._creating.setdefault(key, asyncio.Lock())
        async with lock:  # this node's sessions of one grant wait for one creation
            try:
                item, created = await self.store.create(
                    target, kind, name, grant_id, user, groups, sudo,
                    owner=self.node, now=self.clock(),
                )  # fmt: skip
            except UidRangeExhausted as exc:
                raise ProvisionRefused(str(exc)) from None
            if not created:
                return await self._existing(item, name)
            self._busy.add(item.id)
            try:
                if kind == "account":
                    await self._create_account(item, target)
                else:
                    await self._elevate(item, target)
            except Exception as exc:
                error = str(exc) if isinstance(exc, ProvisionError) else type(exc).__name__
                await self.store.move(
                    item, "revoking", now=self.clock(), from_states=("creating",),
                    reason=f"{name} could not be set up on {target.name}", error=error,
                )  # fmt: skip
                self.wake()
                raise ProvisionRefused(f"{name} could not be set up on {target.name}") from None
            finally:
                self._busy.discard(item.id)
            moved = await self.store.move(
                item, "active", now=self.clock(), from_states=("creating",)
            )
            if moved is None:
                raise ProvisionRefused(f"{name} on {target.name} is being taken away")
            self.wake()  # the reconciler now watches its grant's end
            return name

    async def _existing(self, item: Item, name: str) -> str:
        deadline = asyncio.get_running_loop().time() + 120
        while item.state == "creating" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.25)  # another node is creating it
            fresh = await self.store.get(item.id)
            if fresh is None:
                break
            item = fresh
        if item.state != "active":
            raise ProvisionRefused(f"{name} on {item.target} is not available ({item.state})")
        return name

    async def _shell(self, target: Target, purpose: str) -> TargetShell:
        try:
            out = await self.vault.checkout_provisioner(target.name, purpose, ACTOR)
        except VaultError as exc:
            raise ProvisionError(
                f"{target.name} has no usable provisioner key ({type(exc).__name__})"
            ) from None
        import asyncssh  # not at the top: every `lockgate` command imports this module

        key = asyncssh.import_private_key(out.secret.reveal())
        return await open_shell(target, str(out.public.get("username", "")), key)

    async def _create_account(self, item: Item, target: Target) -> None:
        import asyncssh

        key = asyncssh.generate_private_key("ssh-ed25519")
        await self.vault.set_credential(
            ACTOR,
            target.name,
            item.account,
            "private_key",
            Secret(bytes(key.export_private_key())),
        )
        public = key.export_public_key().decode().strip() + f" lockgate-{item.grant_id}"
        shell = await self._shell(target, f"create {item.account}")
        try:
            for _ in range(MAX_UID_TRIES):
                assert item.uid is not None
                acct = self._account(item, public)
                try:
                    await shell.run(steps.home_absent(acct.home))
                except ProvisionError:
                    raise ProvisionError(
                        f"{target.name}: {acct.home} already exists; refusing to use it"
                    ) from None
                try:
                    await shell.run(steps.useradd(acct))
                    break
                except ProvisionError as exc:
                    if exc.status != 4:  # 4: the UID is taken by an account not ours
                        raise
                    item = await self.store.new_uid(item, target, self.clock(), str(exc))
            else:
                raise ProvisionError(f"{target.name}: no free UID after {MAX_UID_TRIES} tries")
            await shell.run_all(steps.make_home(acct))
            if acct.sudo:
                text = steps.sudoers_text(acct.name, acct.sudo, acct.note)
                await shell.run_all(steps.install_sudoers(acct.sudoers, text))
        finally:
            shell.close()

    def _account(self, item: Item, public_key: str = "") -> steps.Account:
        assert item.uid is not None
        return steps.Account(
            item.account,
            item.uid,
            item.groups,
            item.sudo,
            public_key,
            steps.sudoers_file(item.grant_id),
            f"lockgate grant {item.grant_id} of {item.user}",
        )

    async def _elevate(self, item: Item, target: Target) -> None:
        shell = await self._shell(target, f"elevate {item.account}")
        try:
            current = set((await shell.run(steps.current_groups(item.account))).stdout.split())
            added = [g for g in item.groups if g not in current]
            await self.store.set_added_groups(item, added, self.clock())
            if added:
                await shell.run(steps.add_groups(item.account, added))
            if item.sudo:
                path = steps.sudoers_file(item.grant_id)
                note = f"lockgate grant {item.grant_id} of {item.user}"
                text = steps.sudoers_text(item.account, item.sudo, note)
                await shell.run_all(steps.install_sudoers(path, text))
        finally:
            shell.close()

    # --- taking it away -------------------------------------------------------------
    async def take_away(self, target: str, grant_id: str | None, reason: str) -> int:
        """Start removing what was provisioned on ``target`` for ``grant_id`` (a session of
        it was terminated): the grant stays, and its next session gets a fresh account."""
        if not grant_id:
            return 0
        moved = 0
        for item in await self.store.list(target=target, states=("active",)):
            if item.grant_id == grant_id:
                done = await self.store.move(
                    item, "revoking", now=self.clock(), from_states=("active",), reason=reason
                )
                moved += done is not None
        if moved:
            self.wake()
        return moved

    async def list(self, target: str | None = None, *, live_only: bool = False) -> list[Item]:
        return await self.store.list(target=target, states=LIVE if live_only else None)

    async def _still_needed(self, item: Item) -> tuple[str | None, datetime | None]:
        """(why it must go, or None; when its grant ends)."""
        try:
            grant = await self.policy.get_grant(SYSTEM_ACTOR, item.grant_id)
        except PolicyError:
            return "grant no longer exists", None
        if grant.revoked_at is not None:
            return f"grant revoked by {grant.revoked_by}: {grant.revoke_reason}", None
        if not grant.is_active(self.clock()):
            return "grant expired", None
        auth = await self.policy.authorize_session(item.user, item.target, grant.account, None)
        if not auth.decision.allowed:
            return str(auth.decision.message)[:200], None
        return None, grant.expires_at

    async def provision_approved(self, live: Sequence[Item]) -> None:
        """Make the account (or elevation) of each active grant whose rule says
        ``provision_at = "approval"`` and that has none yet, without waiting for its first
        session. Tried once per grant on this node; a failure is taken away by the
        reconciler like any other, and the first session then tries again."""
        have = {item.grant_id for item in live}
        for grant in await self.policy.list_grants(SYSTEM_ACTOR, active_only=True):
            rule = self.policy.rule(grant.rule)
            if grant.id in have or grant.id in self._early or rule is None:
                continue
            if rule.provision_at != "approval":
                continue
            try:
                target = await self.policy.get_target(grant.target)
            except PolicyError:
                continue
            if target.provision == "none":
                continue
            self._early.add(grant.id)
            task = asyncio.ensure_future(self._early_account(grant.user, target, grant))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _early_account(self, user: str, target: Target, grant: Grant) -> None:
        try:
            await self.session_account(user, target, grant.account, grant.id)
        except ProvisionRefused as exc:
            log.warning("provisioning at approval for grant %s: %s", grant.id, exc)

    async def reconcile(self, *, starting: bool = False) -> datetime | None:
        """One pass over every live row (see the module docstring); returns when the next
        pass is due (a grant's end or a retry), None if nothing is scheduled."""
        now = self.clock()
        due: list[datetime] = []
        live = await self.store.list(states=LIVE)
        await self.provision_approved(live)
        for item in live:
            if item.id in self._busy:
                continue
            moved: Item | None = item
            if item.state == "active":
                why, until = await self._still_needed(item)
                if why is None:
                    if until is not None:
                        due.append(until)
                    continue
                moved = await self.store.move(
                    item, "revoking", now=now, from_states=("active",), reason=why
                )
            elif item.state == "creating":
                orphaned = (starting and item.owner == self.node) or (
                    now - item.updated_at > CREATING_STALE
                )
                if not orphaned:
                    due.append(item.updated_at + CREATING_STALE)
                    continue
                moved = await self.store.move(
                    item, "revoking", now=now, from_states=("creating",),
                    reason="interrupted while being created",
                )  # fmt: skip
            if moved is None or moved.state != "revoking":
                continue
            if moved.next_attempt_at is not None and moved.next_attempt_at > now:
                due.append(moved.next_attempt_at)
                continue
            self._busy.add(moved.id)
            task = asyncio.ensure_future(self._remove(moved))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return min(due) if due else None

    async def _remove(self, item: Item) -> None:
        try:
            now = self.clock()
            if not await self.store.claim(item, now=now, until=now + LEASE, owner=self.node):
                return
            try:
                await self._take_away(item)
            except Exception as exc:
                error = str(exc) if isinstance(exc, ProvisionError) else type(exc).__name__
                log.warning("removing %s: %s", item.subject, error)
                now = self.clock()
                retry_at = now + backoff(item.attempts)
                await self.store.attempt_failed(item, now=now, retry_at=retry_at, error=error)
                if self.on_retry is not None:
                    self.on_retry(item, error)
                return
            final: State = "removed" if item.activated_at is not None else "failed"
            await self.store.move(item, final, now=self.clock(), from_states=("revoking",))
        except Exception:
            log.exception("provisioning: recording the removal of %s failed", item.subject)
        finally:
            self._busy.discard(item.id)
            self.wake()

    async def _take_away(self, item: Item) -> None:
        if self.end_sessions is not None:
            await self.end_sessions(item.target, item.account, item.reason or "access ended")
        try:
            target = await self.policy.get_target(item.target)
        except PolicyError:
            raise ProvisionError(f"target {item.target} no longer exists") from None
        shell = await self._shell(target, f"remove {item.account}")
        try:
            path = steps.sudoers_file(item.grant_id)
            if item.kind == "account":
                tag = item.id.removeprefix("pv-")
                await shell.run_all(
                    steps.remove_account(item.account, item.uid, path, target.home_archive, tag)
                )
                await shell.run(steps.confirm_account_gone(item.account, item.uid, path))
            else:
                await self._unelevate(shell, item, path)
        finally:
            shell.close()
        if item.kind == "account":
            with contextlib.suppress(VaultError):
                await self.vault.delete_credential(ACTOR, item.target, item.account)

    async def _unelevate(self, shell: TargetShell, item: Item, path: str) -> None:
        others = [
            o
            for o in await self.store.list(target=item.target, states=("creating", "active"))
            if o.kind == "elevation" and o.account == item.account and o.id != item.id
        ]
        kept = {g for o in others for g in o.groups}
        gone = [g for g in item.added_groups if g not in kept]
        for other in others:  # a group another grant still needs becomes that grant's to remove
            adopt = [g for g in item.added_groups if g in other.groups]
            if adopt:
                merged = [*other.added_groups, *adopt]
                await self.store.set_added_groups(other, merged, self.clock())
        await shell.run_all(steps.remove_sudoers(path))
        for group in gone:
            await shell.run(steps.remove_group(item.account, group))
        await shell.run(steps.confirm_elevation_gone(item.account, gone, path))

    async def drift_scan(self) -> int:
        """Look for drift on every provisioned target (``gateway.provision.drift``); an
        unreachable target is skipped until the next scan. Returns what was found."""
        found = 0
        for target in await self.policy.list_targets():
            if target.provision == "none":
                continue
            try:
                shell = await self._shell(target, "drift scan")
            except ProvisionError as exc:
                log.warning("drift scan of %s skipped: %s", target.name, exc)
                continue
            try:
                found += await drift.scan(shell, target, self.store, self.audit, self.clock)
            except ProvisionError as exc:
                log.warning("drift scan of %s failed: %s", target.name, exc)
            finally:
                shell.close()
        if found:
            self.wake()
        return found

    # --- the loop -------------------------------------------------------------------
    async def run(self, sleep_until: Callable[[datetime], Awaitable[None]]) -> None:
        """Sweep at start (resuming every unfinished row), then reconcile whenever woken,
        a grant ends or a retry is due, at least every minute; a drift scan at start and
        every 15 minutes."""
        starting = True
        next_drift = self.clock()
        while True:
            self._wake.clear()
            due: datetime | None = None
            try:
                due = await self.reconcile(starting=starting)
                starting = False
                if self.clock() >= next_drift:
                    next_drift = self.clock() + DRIFT_EVERY
                    await self.drift_scan()
            except Exception:
                log.exception("provisioning: a reconcile pass failed")
            wake_at = min(self.clock() + POLL, next_drift)
            if due is not None:
                wake_at = min(wake_at, due)
            sleeper = asyncio.ensure_future(sleep_until(wake_at))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
