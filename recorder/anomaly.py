"""Anomaly rules: regular expressions over commands or screen output, and what they do.

A shell line check is a guard, not a sandbox: it sees the line as the gateway reconstructs
it from keystrokes, so aliases, scripts, shell expansion, pasted heredocs or commands built
at run time are not seen. It stops the obvious mistake and the careless; the recording and
the audit trail are what hold people accountable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recorder.errors import InvalidRule

Match = Literal["command", "output"]
Action = Literal["alert", "block", "kill", "kill_and_lock"]
_KEYS = {"name", "match", "pattern", "action"}
ACTIONS = ("alert", "block", "kill", "kill_and_lock")


@dataclass(frozen=True)
class AnomalyRule:
    name: str
    match: Match
    pattern: re.Pattern[str]
    action: Action


@dataclass(frozen=True)
class AnomalyHit:
    rule: str
    action: Action
    text: str  # the command line or output line that matched


def parse_anomaly_rule(raw: Mapping[str, Any]) -> AnomalyRule:
    """Validate one ``[[anomaly.rules]]`` table; errors name the offending key."""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise InvalidRule(f"unknown key {unknown[0]}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise InvalidRule("name must be 1-64 letters, digits, '.', '_' or '-'")
    match = raw.get("match", "command")
    if match not in ("command", "output"):
        raise InvalidRule("match must be 'command' or 'output'")
    action = raw.get("action", "alert")
    if action not in ACTIONS:
        raise InvalidRule(f"action must be one of {', '.join(ACTIONS)}")
    if action == "block" and match != "command":
        raise InvalidRule("action 'block' needs match = 'command' (output cannot be un-shown)")
    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRule("pattern must be a non-empty regular expression")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InvalidRule(f"pattern does not compile: {exc}") from None
    return AnomalyRule(name, match, compiled, action)


class AnomalyEngine:
    """Checks text against the configured rules. Pure; cheap enough for the command path."""

    def __init__(self, rules: Sequence[AnomalyRule]) -> None:
        self.commands = tuple(r for r in rules if r.match == "command")
        self.outputs = tuple(r for r in rules if r.match == "output")

    def check_command(self, line: str) -> list[AnomalyHit]:
        return [AnomalyHit(r.name, r.action, line) for r in self.commands if r.pattern.search(line)]

    def check_output(self, line: str) -> list[AnomalyHit]:
        return [AnomalyHit(r.name, r.action, line) for r in self.outputs if r.pattern.search(line)]
