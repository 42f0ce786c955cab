"""Credential vault: envelope encryption, checkout, SSH CA. Depends on no sibling package."""
