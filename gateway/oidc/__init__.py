"""Signing in through OpenID Connect providers (``[[auth.oidc]]``): the flow, the claims to
roles mapping, the SSH device login and the periodic check that deprovisions."""
