"""The policy service's users: accounts, passwords, keys and TOTP enrolment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from policy import store
from policy import tables as t
from policy.errors import Conflict, InvalidInput, NotFound
from policy.models import (
    User,
)
from policy.passwords import hash_password
from policy.service.base import _NAME, _ROLE, SYSTEM_ACTOR, ServiceBase, _new_id, normalize_key


class UsersMixin(ServiceBase):
    # --- users -----------------------------------------------------------------
    async def add_user(
        self,
        actor: str,
        name: str,
        *,
        roles: Sequence[str] = (),
        public_keys: Sequence[str] = (),
        password: str | None = None,
    ) -> User:
        """Admin only. Names are lower-case (no ``+``/``@``: they separate the SSH login)."""
        if not _NAME.match(name) or name == SYSTEM_ACTOR:
            raise InvalidInput(f"invalid user name {name!r}: use a-z, 0-9, '.', '_', '-'")
        for role in roles:
            if not _ROLE.match(role):
                raise InvalidInput(f"invalid role {role!r}")
        keys = list(dict.fromkeys(normalize_key(k) for k in public_keys))
        if password is not None:
            # Check the actor before argon2 runs: hashing is deliberately expensive, and only
            # an admin may make the gateway spend it here.
            async with self.maker() as db:
                await self._admin(db, actor, "add users")
        hashed = await asyncio.to_thread(hash_password, password) if password is not None else None

        async def write(db: AsyncSession) -> User:
            await self._admin(db, actor, "add users")
            if await store.user_row(db, name) is not None:
                raise Conflict(f"user {name} already exists")
            user_id = _new_id("us")
            await self._audit(
                db,
                actor,
                "user.add",
                name,
                roles=sorted(set(roles)),
                keys=len(keys),
                password=hashed is not None,
            )
            await db.execute(
                t.users.insert().values(
                    id=user_id,
                    name=name,
                    roles=json.dumps(sorted(set(roles))),
                    password_hash=hashed,
                    totp_enabled=False,
                    disabled=False,
                    created_at=self.now(),
                )
            )
            for key in keys:
                await db.execute(t.user_keys.insert().values(user_id=user_id, public_key=key))
            user = await store.load_user(db, name)
            assert user is not None
            return user

        return await self._write(write)

    async def list_users(self) -> list[User]:
        async with self.maker() as db:
            return await store.list_users(db)

    async def _update_user(
        self,
        actor: str,
        name: str,
        action: str,
        what: str,
        values: dict[str, Any],
        *,
        access_changed: bool = False,
        **details: Any,
    ) -> User:
        async def write(db: AsyncSession) -> User:
            if not (actor == name and action == "user.password"):
                await self._admin(db, actor, what)
            if await store.user_row(db, name) is None:
                raise NotFound(f"no user {name}")
            await self._audit(db, actor, action, name, access_changed=access_changed, **details)
            await db.execute(t.users.update().where(t.users.c.name == name).values(**values))
            user = await store.load_user(db, name)
            assert user is not None
            return user

        return await self._write(write)

    async def change_user(
        self,
        actor: str,
        name: str,
        *,
        roles: Sequence[str] | None = None,
        add_keys: Sequence[str] = (),
        remove_keys: Sequence[str] = (),
        enable: bool = False,
    ) -> User:
        """Admin only, in one transaction and one audit event: ``roles`` (when given)
        replace the user's roles; keys are added (OpenSSH lines) and removed (by
        ``SHA256:`` fingerprint or key line; NotFound for a key the user does not have);
        ``enable`` lifts ``disable``. Taking roles away re-checks live sessions."""
        for role in roles or ():
            if not _ROLE.match(role):
                raise InvalidInput(f"invalid role {role!r}")
        added = list(dict.fromkeys(normalize_key(k) for k in add_keys))

        async def write(db: AsyncSession) -> User:
            await self._admin(db, actor, "change users")
            row = await store.user_row(db, name)
            if row is None:
                raise NotFound(f"no user {name}")
            current = (await store.user_keys(db, [row.id])).get(row.id, [])
            gone = [_key_named(current, wanted) for wanted in remove_keys]
            values: dict[str, Any] = {}
            if roles is not None:
                values["roles"] = json.dumps(sorted(set(roles)))
            if enable:
                values["disabled"] = False
            await self._audit(
                db,
                actor,
                "user.change",
                name,
                access_changed=roles is not None or bool(gone),
                roles=sorted(set(roles)) if roles is not None else None,
                keys_added=len([k for k in added if k not in current]),
                keys_removed=len(set(gone)),
                enabled=enable,
            )
            if values:
                await db.execute(t.users.update().where(t.users.c.id == row.id).values(**values))
            for key in set(gone):
                await db.execute(
                    t.user_keys.delete().where(
                        (t.user_keys.c.user_id == row.id) & (t.user_keys.c.public_key == key)
                    )
                )
            for key in added:
                if key not in current:
                    await db.execute(t.user_keys.insert().values(user_id=row.id, public_key=key))
            user = await store.load_user(db, name)
            assert user is not None
            return user

        return await self._write(write)

    async def disable_user(self, actor: str, name: str) -> User:
        return await self._update_user(
            actor, name, "user.disable", "disable users", {"disabled": True}, access_changed=True
        )

    async def set_password(self, actor: str, name: str, password: str) -> User:
        return await self._update_user(
            actor,
            name,
            "user.password",
            "set passwords",
            {"password_hash": await self._hash_as(actor, name, password)},
        )

    async def _hash_as(self, actor: str, name: str, password: str) -> str:
        """argon2 only for an actor allowed to set this password (admin or the user)."""
        if actor != name:
            async with self.maker() as db:
                await self._admin(db, actor, "set passwords")
        return await asyncio.to_thread(hash_password, password)

    async def set_totp_enabled(self, actor: str, name: str, enabled: bool) -> User:
        return await self._update_user(
            actor,
            name,
            "user.totp",
            "change second factors",
            {"totp_enabled": enabled},
            enabled=enabled,
        )

    async def verify_password(self, name: str, password: str) -> User | None:
        """argon2id verify; equal work for unknown, disabled or password-less users. The hash
        is read and the database session closed before the check (``password_check``, off the
        event loop), so a slow check holds no connection, lock or transaction."""
        async with self.maker() as db:
            row = await store.user_row(db, name)
        stored = row.password_hash if row is not None else None
        ok = await self.password_check(stored, password)
        if not ok or row is None or row.disabled:
            return None
        async with self.maker() as db:
            return await store.load_user(db, name)

    async def user_for_key(self, name: str, public_key: str) -> User | None:
        """The enabled user ``name`` if ``public_key`` (OpenSSH line) is registered to it."""
        try:
            wanted = normalize_key(public_key)
        except InvalidInput:
            return None
        async with self.maker() as db:
            user = await store.load_user(db, name)
        if user is None or user.disabled or wanted not in user.public_keys:
            return None
        return user


def key_fingerprint(line: str) -> str:
    """The ``SHA256:`` fingerprint of an OpenSSH public key line, as ``ssh-keygen -l`` shows."""
    import asyncssh

    return str(asyncssh.import_public_key(line).get_fingerprint("sha256"))


def _key_named(keys: Sequence[str], wanted: str) -> str:
    """The registered key that ``wanted`` (a fingerprint or a key line) names."""
    wanted = wanted.strip()
    for key in keys:
        if wanted in (key, key_fingerprint(key)) or (
            " " in wanted and normalize_key(wanted) == key
        ):
            return key
    raise NotFound(f"the user has no key {wanted[:80]}")
