"""Errors of the access model. Edges (SSH, HTTP, CLI) translate these once."""


class PolicyError(Exception):
    """Root of every policy error. ``str()`` is safe to show the person who acted."""


class NotFound(PolicyError):
    """The named user, target, request, grant or lock does not exist (or is not visible)."""


class AccessDenied(PolicyError):
    """The actor may not do this."""


class Refused(AccessDenied):
    """Well-formed, but the rules do not allow it: longer than a rule's maximum, an account
    the target does not have, a reason or ticket the rule requires left out."""


class Conflict(PolicyError):
    """The object already exists, or changed concurrently."""


class ConcurrentUpdate(Conflict):
    """A compare-and-swap lost a race: the row changed since it was read. The service
    re-reads and re-decides; only if that keeps failing does the caller see a Conflict."""


class InvalidTransition(PolicyError):
    """The request or grant is not in a state that allows this action."""


class InvalidInput(PolicyError):
    """A value failed validation (bad duration, name, pattern, missing reason...)."""
