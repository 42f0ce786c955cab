"""A value that refuses to show itself."""

from __future__ import annotations

from typing import NoReturn


class Secret:
    """Wraps secret bytes. ``repr``/``str``/``format`` show ``***``; it cannot be pickled,
    compared by ``==`` (use constant-time helpers) or hashed. ``reveal()`` is the only way
    to the plaintext and is called only where the value is handed to a protocol."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes | str) -> None:
        self._value = value.encode() if isinstance(value, str) else bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def reveal_text(self) -> str:
        return self._value.decode()

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        raise TypeError("compare secrets with hmac.compare_digest")

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("secrets cannot be pickled")
