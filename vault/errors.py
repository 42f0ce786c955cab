"""Errors of the vault. Messages never contain secret material."""


class VaultError(Exception):
    """Root of every vault error."""


class NotFound(VaultError):
    """No credential for that target and account."""


class IntegrityError(VaultError):
    """A ciphertext or wrapped key failed authentication (tampered, swapped, wrong key)."""


class MasterKeyError(VaultError):
    """The master key is missing, malformed, or its file is readable by others."""


class InvalidInput(VaultError):
    """A credential value or kind failed validation."""
