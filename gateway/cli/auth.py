"""Identity provider commands: the mapping dry run, and the client secret."""

from __future__ import annotations

import json

from gateway.cli.context import Context, Usage
from gateway.config import load_config
from gateway.oidc.accounts import judge
from gateway.oidc.signin import SECRET_TARGET
from vault.secret import Secret


async def test_mapping(ctx: Context) -> int:
    """What a set of claims (a JSON object, e.g. a decoded ID token merged with userinfo)
    would sign in as at provider ``--provider``: user, the managed roles granted, and the
    refusal if any. Reads the configuration only; changes nothing."""
    a = ctx.args
    provider = load_config(ctx.config_path).oidc_provider(a.provider)
    if provider is None:
        raise Usage(f"no [[auth.oidc]] provider named {a.provider!r} in the configuration")
    try:
        claims = json.loads(a.claims.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Usage(f"cannot read {a.claims}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise Usage(f"{a.claims} is not JSON") from None
    if not isinstance(claims, dict):
        raise Usage(f"{a.claims} must hold a JSON object of claims")
    verdict = judge(provider, claims)
    result = {
        "provider": provider.name,
        "user": verdict.user,
        "groups": list(verdict.groups),
        "roles": sorted(verdict.roles),
        "removed_if_held": sorted(verdict.managed - verdict.roles),
        "refused": str(verdict.refusal) if verdict.refusal else None,
    }
    ctx.emit(result)
    return 1 if verdict.refusal else 0


test_mapping.needs_services = False  # type: ignore[attr-defined]


async def oidc_secret(ctx: Context) -> int:
    """``credential set --oidc NAME``: the provider's client secret, from stdin, write-only."""
    name = ctx.args.oidc
    if ctx.args.target or ctx.args.account:
        raise Usage("credential set --oidc NAME takes no TARGET or ACCOUNT")
    if ctx.svc.config.oidc_provider(name) is None:
        raise Usage(f"no [[auth.oidc]] provider named {name!r} in the configuration")
    info = await ctx.svc.vault.set_credential(
        ctx.actor,
        SECRET_TARGET,
        name,
        "oidc_client_secret",
        Secret(ctx.read_stdin_secret("client secret")),
    )
    return ctx.emit(info)
