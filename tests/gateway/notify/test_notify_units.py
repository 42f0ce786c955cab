"""Notification pieces without receivers: the channel tables of the configuration, the
retry schedule, and what a chat message lets a typed value do."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.notify.chat import escape, message
from gateway.notify.outbox import backoff
from gateway.notify.settings import Channel


def test_channels_are_read_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "lockgate.toml"
    path.write_text(
        '[[notifications]]\nname = "chat"\nkind = "slack"\nevents = ["request.*"]\n'
        '[[notifications]]\nname = "mail"\nkind = "email"\nsmtp = "mx:587"\n'
        'sender = "lg@example.com"\nto_approvers = true\nuser_address = "{user}@example.com"\n'
    )
    chat, mail = load_config(path, environ={}).notifications
    assert chat == Channel(name="chat", kind="slack", events=("request.*",))
    assert chat.wants("request.approved", "any") and not chat.wants("grant.revoked", "any")
    assert mail.to_approvers and mail.starttls and mail.smtp == "mx:587"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "x"\nkind = "pager"', "kind must be webhook, slack or email"),
        ('kind = "webhook"\nurl = "https://h"', "name is required"),
        ('name = "x"\nkind = "webhook"', "url must be an http"),
        ('name = "x"\nkind = "slack"\nevents = ["request.create"]', "matches no event"),
        ('name = "x"\nkind = "slack"\nto = ["a@b"]', "unknown key to for kind slack"),
        (
            'name = "x"\nkind = "email"\nsmtp = "mx:25"\nsender = "a@b"\nto = ["c@d"]\n'
            'username = "lg"\nstarttls = false',
            "the password never goes in clear",
        ),
        ('name = "x"\nkind = "email"\nsmtp = "mx:25"\nsender = "a@b"', "needs to, to_approvers"),
        (
            'name = "x"\nkind = "email"\nsmtp = "mx:25"\nsender = "a@b"\nto_requester = true',
            "need user_address",
        ),
    ],
)
def test_a_bad_channel_is_refused_with_its_key(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "lockgate.toml"
    path.write_text(f"[[notifications]]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_retries_back_off_to_a_ceiling() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [timedelta(seconds=s) for s in (10, 20, 40, 80)]
    assert backoff(30) == timedelta(minutes=30)


def test_typed_values_cannot_mention_or_link_in_chat() -> None:
    assert escape("@channel <!here> <https://evil|click> a&b root@db01") == (
        "@\u200bchannel &lt;!here&gt; &lt;https://evil|click&gt; a&amp;b root@db01"
    )
    notice = {
        "id": "k",
        "event": "request.created",
        "actor": "alice",
        "rule": "r",
        "thread": "rq-1",
        "link": "https://gw/approvals?request=rq-1",
        "request": {
            "id": "rq-1",
            "user": "alice",
            "target": "db01",
            "account": "root",
            "reason": "<@U123> please",
            "approvals": 0,
            "approvals_required": 2,
        },
        "grant": None,
    }
    body = message(Channel(name="c", kind="slack", url="https://h", channel="#ops"), notice)
    reason = next(f for f in body["attachments"][0]["fields"] if f["title"] == "Reason")
    assert reason["value"] == "&lt;@\u200bU123&gt; please"
    assert body["channel"] == "#ops" and "(0 of 2 approvals)" in body["text"]
