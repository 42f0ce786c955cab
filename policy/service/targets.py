"""The policy service's targets and what a user may request."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from policy import store
from policy import tables as t
from policy.errors import Conflict, InvalidInput, NotFound
from policy.models import (
    Rule,
    Target,
)
from policy.provisioning import (
    DEFAULT_UID_RANGE,
    EPHEMERAL_ACCOUNT,
    Provisioning,
    parse_home_archive,
    parse_mode,
    parse_uid_range,
)
from policy.rules import match_rule
from policy.service.base import (
    _NAME,
    _ROLE,
    _TARGET,
    Requestable,
    ServiceBase,
    _new_id,
    normalize_key,
)
from policy.webtarget import WebSettings, web_settings


class TargetsMixin(ServiceBase):
    # --- targets ---------------------------------------------------------------
    async def add_target(
        self,
        actor: str,
        name: str,
        *,
        kind: str = "ssh",
        host: str | None = None,
        port: int = 22,
        host_key: str | None = None,
        url: str | None = None,
        tls_verify: bool = True,
        labels: dict[str, str] | None = None,
        accounts: Sequence[str] = (),
        default_account: str | None = None,
        tls_ca: str | None = None,
        tls_fingerprint: str | None = None,
        preserve_host: bool = False,
        sensitive_params: Sequence[str] = (),
        record_bodies: int = 0,
        provision: str = "none",
        uid_range: str | None = None,
        home_archive: str = "",
    ) -> Target:
        """Admin only, audited. An ``http`` target's URL and settings are validated by
        ``policy.webtarget.web_settings``; ``tls_verify=False`` (no certificate check) is
        recorded in the audit details as ``tls_insecure: true``. The CA bundle itself is not
        copied into the audit log, only that one is set."""
        if not _TARGET.match(name):
            raise InvalidInput(f"invalid target name {name!r}")
        if kind not in ("ssh", "http"):
            raise InvalidInput("target kind must be ssh or http")
        if kind == "ssh":
            if not host or not re.fullmatch(r"[A-Za-z0-9.:_-]{1,253}", host):
                raise InvalidInput("an SSH target needs a valid --host")
            if not 1 <= port <= 65535:
                raise InvalidInput("port must be between 1 and 65535")
            host_key = normalize_key(host_key) if host_key else None
            web = None
        else:
            web = web_settings(
                url or "",
                tls_verify=tls_verify,
                tls_ca=tls_ca,
                tls_fingerprint=tls_fingerprint,
                preserve_host=preserve_host,
                sensitive_params=sensitive_params,
                record_bodies=record_bodies,
            )
        for account in accounts:
            if not _NAME.match(account):
                raise InvalidInput(f"invalid account name {account!r}")
        accounts = list(dict.fromkeys(accounts))
        prov = _provisioning(kind, provision, uid_range, home_archive, None)
        if prov.mode == "ephemeral" and not accounts and default_account is None:
            default_account = EPHEMERAL_ACCOUNT
        if default_account is None and accounts:
            default_account = accounts[0]
        if default_account is not None and default_account not in accounts:
            if not _NAME.match(default_account):
                raise InvalidInput(f"invalid account name {default_account!r}")
            accounts.append(default_account)
        for key, value in (labels or {}).items():
            if not _ROLE.match(key) or len(value) > 64:
                raise InvalidInput(f"invalid label {key}={value}")

        async def write(db: AsyncSession) -> Target:
            await self._admin(db, actor, "add targets")
            if await store.load_target(db, name) is not None:
                raise Conflict(f"target {name} already exists")
            await self._audit(
                db,
                actor,
                "target.add",
                name,
                kind=kind,
                host=host,
                port=port,
                accounts=accounts,
                pinned=host_key is not None,
                **(_web_audit(web) if web else {}),
                **(_prov_audit(prov) if prov.mode != "none" else {}),
            )
            await db.execute(
                t.targets.insert().values(
                    id=_new_id("tg"),
                    name=name,
                    kind=kind,
                    host=host,
                    port=port,
                    host_key=host_key,
                    labels=json.dumps(labels or {}, sort_keys=True),
                    accounts=json.dumps(accounts),
                    default_account=default_account,
                    created_at=self.now(),
                    **_web_values(web),
                    **_prov_values(prov),
                )
            )
            target = await store.load_target(db, name)
            assert target is not None
            return target

        return await self._write(write)

    async def set_target_endpoint(
        self, actor: str, name: str, *, host: str, port: int, host_key: str
    ) -> Target:
        """Admin only: move an SSH target and re-pin its host key (audited)."""
        pinned = normalize_key(host_key)

        async def write(db: AsyncSession) -> Target:
            await self._admin(db, actor, "change targets")
            if await store.load_target(db, name) is None:
                raise NotFound(f"no target {name}")
            await self._audit(db, actor, "target.endpoint", name, host=host, port=port)
            await db.execute(
                t.targets.update()
                .where(t.targets.c.name == name)
                .values(host=host, port=port, host_key=pinned)
            )
            target = await store.load_target(db, name)
            assert target is not None
            return target

        return await self._write(write)

    async def set_target_web(
        self,
        actor: str,
        name: str,
        *,
        url: str | None = None,
        tls_verify: bool | None = None,
        tls_ca: str | None = None,
        tls_fingerprint: str | None = None,
        preserve_host: bool | None = None,
        sensitive_params: Sequence[str] | None = None,
        record_bodies: int | None = None,
    ) -> Target:
        """Admin only, audited: change a web target's settings. None keeps a setting; the
        upstream trust is one choice, so giving any of ``tls_verify``, ``tls_ca`` or
        ``tls_fingerprint`` replaces all three (``tls_ca=""``/``tls_fingerprint=""`` with
        ``tls_verify=True`` goes back to the system store)."""

        async def write(db: AsyncSession) -> Target:
            await self._admin(db, actor, "change targets")
            current = await store.load_target(db, name)
            if current is None:
                raise NotFound(f"no target {name}")
            if current.kind != "http":
                raise InvalidInput(f"{name} is not a web target")
            trust = tls_verify is not None or tls_ca is not None or tls_fingerprint is not None
            web = web_settings(
                url if url is not None else current.url or "",
                tls_verify=(tls_verify is not False) if trust else current.tls_verify,
                tls_ca=tls_ca if trust else current.tls_ca,
                tls_fingerprint=tls_fingerprint if trust else current.tls_fingerprint,
                preserve_host=current.preserve_host if preserve_host is None else preserve_host,
                sensitive_params=(
                    current.sensitive_params if sensitive_params is None else sensitive_params
                ),
                record_bodies=current.record_bodies if record_bodies is None else record_bodies,
            )
            await self._audit(db, actor, "target.web", name, **_web_audit(web))
            await db.execute(
                t.targets.update().where(t.targets.c.name == name).values(**_web_values(web))
            )
            target = await store.load_target(db, name)
            assert target is not None
            return target

        return await self._write(write)

    async def set_target_provision(
        self,
        actor: str,
        name: str,
        *,
        provision: str | None = None,
        uid_range: str | None = None,
        home_archive: str | None = None,
    ) -> Target:
        """Admin only, audited: an SSH target's provisioning mode, UID range and home
        archive (None keeps a setting). An ephemeral target without accounts gets the
        account ``ephemeral`` that requests and grants name; every session on it logs in
        as the grant's own account on the target, whatever account the grant names."""

        async def write(db: AsyncSession) -> Target:
            await self._admin(db, actor, "change targets")
            current = await store.load_target(db, name)
            if current is None:
                raise NotFound(f"no target {name}")
            prov = _provisioning(
                current.kind,
                current.provision if provision is None else provision,
                uid_range,
                current.home_archive if home_archive is None else home_archive,
                current,
            )
            values = _prov_values(prov)
            if prov.mode == "ephemeral" and not current.accounts and not current.default_account:
                values.update(
                    accounts=json.dumps([EPHEMERAL_ACCOUNT]), default_account=EPHEMERAL_ACCOUNT
                )
            await self._audit(db, actor, "target.provision", name, **_prov_audit(prov))
            await db.execute(t.targets.update().where(t.targets.c.name == name).values(**values))
            target = await store.load_target(db, name)
            assert target is not None
            return target

        return await self._write(write)

    async def credential_target(self, name: str, account: str) -> Target:
        """The target a credential for ``account`` may be stored under: the account must be a
        valid account name and, when the target lists its accounts, one of them (the same
        check ``add_target`` makes), so no vault row exists for an account the target has
        not got. Raises NotFound or InvalidInput."""
        target = await self.get_target(name)
        if not _NAME.match(account):
            raise InvalidInput(f"invalid account name {account!r}")
        if target.accounts and account not in target.accounts:
            raise InvalidInput(
                f"target {target.name} has no account {account}; "
                f"accounts: {', '.join(target.accounts)}"
            )
        return target

    async def list_targets(self) -> list[Target]:
        async with self.maker() as db:
            return await store.list_targets(db)

    async def requestable(self, user: str) -> list[Requestable]:
        """Targets (with accounts and the governing rule) that ``user`` may request."""
        person = await self.get_user(user)
        found = []
        for target in await self.list_targets():
            accounts = target.accounts or (
                (target.default_account,) if target.default_account else ()
            )
            by_rule: dict[str, tuple[Rule, list[str]]] = {}
            for account in accounts:
                rule = match_rule(self.rules, person.roles, target, account)
                if rule is not None:
                    by_rule.setdefault(rule.name, (rule, []))[1].append(account)
            for rule, names in by_rule.values():
                found.append(Requestable(target, tuple(names), rule))
        return found


def _provisioning(
    kind: str, mode: str, uid_range: str | None, home_archive: str, current: Target | None
) -> Provisioning:
    prov_mode = parse_mode(mode)
    if prov_mode != "none" and kind != "ssh":
        raise InvalidInput("only SSH targets can be provisioned")
    low, high = (
        parse_uid_range(uid_range)
        if uid_range is not None
        else (current.uid_min, current.uid_max)
        if current is not None
        else DEFAULT_UID_RANGE
    )
    return Provisioning(prov_mode, low, high, parse_home_archive(home_archive))


def _prov_values(prov: Provisioning) -> dict[str, Any]:
    return {
        "provision": prov.mode,
        "uid_min": prov.uid_min,
        "uid_max": prov.uid_max,
        "home_archive": prov.home_archive,
    }


def _prov_audit(prov: Provisioning) -> dict[str, Any]:
    return {
        "provision": prov.mode,
        "uid_range": f"{prov.uid_min}-{prov.uid_max}",
        "home_archive": prov.home_archive,
    }


def _web_values(web: WebSettings | None) -> dict[str, Any]:
    """The web settings' columns (their defaults for an SSH target)."""
    return {
        "url": web.url if web else None,
        "tls_verify": web.tls_verify if web else True,
        "tls_ca": web.tls_ca if web else None,
        "tls_fingerprint": web.tls_fingerprint if web else None,
        "preserve_host": web.preserve_host if web else False,
        "sensitive_params": json.dumps(list(web.sensitive_params) if web else []),
        "record_bodies": web.record_bodies if web else 0,
    }


def _web_audit(web: WebSettings) -> dict[str, Any]:
    return {
        "url": web.url,
        "tls_insecure": not web.tls_verify,
        "tls_ca": web.tls_ca is not None,
        "tls_fingerprint": web.tls_fingerprint,
        "preserve_host": web.preserve_host,
        "sensitive_params": list(web.sensitive_params),
        "record_bodies": web.record_bodies,
    }
