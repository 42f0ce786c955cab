"""Everything a node needs for its OpenID providers, built once."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.oidc.accounts import Accounts
from gateway.oidc.checker import ProviderChecker
from gateway.oidc.device import DeviceLogins
from gateway.oidc.flows import Flows
from gateway.oidc.identities import Identities
from gateway.oidc.signin import Clients, OidcSignIn
from gateway.services import Services
from gateway.sessions.killswitch import Timer


@dataclass
class Federation:
    signin: OidcSignIn
    checker: ProviderChecker
    devices: DeviceLogins
    identities: Identities

    @classmethod
    def build(cls, services: Services, timer: Timer) -> Federation:
        providers = services.config.oidc
        policy = services.policy
        identities = Identities(services.maker)
        accounts = Accounts(policy, identities)
        clients = Clients(providers, services.vault, policy.now)
        return cls(
            signin=OidcSignIn(
                providers,
                clients,
                accounts,
                services.audit,
                policy.now,
                Flows(services.maker, policy.now),
            ),
            checker=ProviderChecker(
                providers,
                clients,
                accounts,
                identities,
                policy,
                services.vault,
                services.audit,
                timer,
            ),
            devices=DeviceLogins(services.maker, policy.now),
            identities=identities,
        )
