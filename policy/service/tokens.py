"""The policy service's API tokens."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from policy import store
from policy import tables as t
from policy import tokens as tok
from policy.errors import NotFound
from policy.models import (
    ApiToken,
    User,
)
from policy.service.base import ServiceBase


class TokensMixin(ServiceBase):
    # --- API tokens ------------------------------------------------------------
    async def create_token(
        self, actor: str, user: str, duration: timedelta | None = None
    ) -> tuple[str, ApiToken]:
        """Admins, or a user for themself. The plaintext is returned once; only a hash is kept."""
        now = self.now()
        token_id, token, hashed = tok.new_token()

        async def write(db: AsyncSession) -> ApiToken:
            if actor != user:
                await self._admin(db, actor, "create tokens for others")
            owner = await store.user_row(db, user)
            if owner is None or owner.disabled:
                raise NotFound(f"no enabled user {user}")
            expires = now + duration if duration else None
            await self._audit(
                db,
                actor,
                "token.create",
                token_id,
                user=user,
                expires_at=expires.isoformat() if expires else None,
            )
            await db.execute(
                t.tokens.insert().values(
                    id=token_id,
                    user=user,
                    secret_hash=hashed,
                    created_at=now,
                    expires_at=expires,
                    revoked=False,
                )
            )
            return ApiToken(token_id, user, now, expires, False)

        return token, await self._write(write)

    async def authenticate_token(self, token: str) -> User | None:
        """Constant-time check of a bearer token; None if unknown, expired, revoked or the
        user is disabled."""
        parts = tok.split(token)
        if parts is None:
            return None
        token_id, secret = parts
        async with self.maker() as db:
            row = (await db.execute(sa.select(t.tokens).where(t.tokens.c.id == token_id))).first()
            valid = tok.matches(secret, row.secret_hash if row else tok.digest("x"))
            if row is None or not valid or row.revoked:
                return None
            info = store.to_token(row)
            if info.expires_at is not None and info.expires_at <= self.now():
                return None
            user = await store.load_user(db, info.user)
        return user if user is not None and not user.disabled else None
