"""schemathesis hooks for tests/gateway/web/test_api_contract.py: how to make values of the
formats only the services can judge (OpenSSH keys, PEM certificates), from files the test
wrote. Loaded in schemathesis's own process through SCHEMATHESIS_HOOKS."""

from __future__ import annotations

import os
from pathlib import Path

import schemathesis
from hypothesis import strategies as st


def _files(variable: str) -> list[str]:
    return [Path(p).read_text() for p in os.environ.get(variable, "").split(os.pathsep) if p]


_PUBLIC = [line.strip() for line in _files("LOCKGATE_FUZZ_PUBLIC_KEYS")]
schemathesis.openapi.format("openssh-public-key", st.sampled_from(_PUBLIC))
schemathesis.openapi.format(
    "openssh-private-key", st.sampled_from(_files("LOCKGATE_FUZZ_PRIVATE_KEYS"))
)
schemathesis.openapi.format("pem-certificates", st.sampled_from(_files("LOCKGATE_FUZZ_CERTS")))
