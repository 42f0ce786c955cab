"""What the API accepts: one pydantic model per JSON body and per query string, the single
source of both the validation the route table runs and the OpenAPI request schemas.

Every string field carries a pattern (at least "no NUL character": PostgreSQL cannot store
one) that the server checks with ``re.fullmatch`` and the document states as
``^(?:...)$``; the patterns use only explicit character classes, so Python and an ECMA-262
validator read them alike. A value the schema allows may still be refused by the rules
(403), be missing (404) or conflict (409); what the schema refuses is 422.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

# What Python's str.split() treats as white space (the services fold reasons with it).
SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT = r"[^\x00]*"
NON_BLANK = rf"[^\x00]*[^\x00{SPACE}][^\x00]*"
USER_NAME = r"[a-z_][a-z0-9_.-]{0,63}"
ACCOUNT = USER_NAME
TARGET_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ROLE = r"[a-z][a-z0-9_.-]{0,63}"
ID = r"[A-Za-z0-9_-]{1,64}"
# Units from days to seconds, each at most once, at least one digit not 0 (a positive
# duration); the 365-day ceiling is a limit (403), not grammar.
DURATION = r"(?=[^1-9]*[1-9])(?:[0-9]{1,9}d)?(?:[0-9]{1,9}h)?(?:[0-9]{1,9}m)?(?:[0-9]{1,9}s)?"
SSH_HOST = r"[A-Za-z0-9.:_-]{1,253}"
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PATH = r"(?:/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,1000})?"
URL = rf"https?://{_LABEL}(?:\.{_LABEL}){{0,8}}(?::{_PORT})?{_PATH}"
HTTPS_URL = rf"https://{_LABEL}(?:\.{_LABEL}){{0,8}}(?::{_PORT})?{_PATH}"
FINGERPRINT = r"(?:sha256:)?[0-9a-fA-F]{64}"
PARAM = r"[A-Za-z0-9_.\[\]-]{1,100}"
UID_RANGE = r"[1-9][0-9]{3,8}-[1-9][0-9]{3,8}"  # 1000-999999999; low <= high or 409
ARCHIVE = r"/[A-Za-z0-9_./-]{1,200}"
HEADER = r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}"
DAY = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
# Formats whose values a regular expression cannot decide; the services parse them.
PUBLIC_KEY = "openssh-public-key"
PRIVATE_KEY = "openssh-private-key"
PEM_CERTS = "pem-certificates"


@dataclass(frozen=True)
class Text:
    """Pydantic metadata of a string: it matches ``core`` in full and has ``min_length`` to
    ``max_length`` characters; the JSON schema states the same as pattern and lengths."""

    core: str
    max_length: int
    min_length: int = 0
    fmt: str = ""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        compiled = re.compile(self.core)
        core = self.core

        def check(value: str) -> str:
            if compiled.fullmatch(value) is None:
                raise ValueError(f"must match ^(?:{core})$")
            return value

        return core_schema.no_info_after_validator_function(
            check,
            core_schema.str_schema(
                min_length=self.min_length, max_length=self.max_length, strict=True
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        if self.fmt:  # its format says more than a pattern could; generators know formats
            return {"type": "string", "format": self.fmt}
        return {
            "type": "string",
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "pattern": f"^(?:{self.core})$",
        }


Reason = Annotated[str, Text(NON_BLANK, min_length=1, max_length=500)]
Comment = Annotated[str, Text(TEXT, max_length=500)]
Duration = Annotated[str, Text(DURATION, min_length=2, max_length=40)]
OptDuration = Annotated[str, Text(f"|{DURATION}", max_length=40)]  # "" = the default
UserName = Annotated[str, Text(USER_NAME, min_length=1, max_length=64)]
TargetName = Annotated[str, Text(TARGET_NAME, min_length=1, max_length=64)]
Account = Annotated[str, Text(ACCOUNT, min_length=1, max_length=64)]
Role = Annotated[str, Text(ROLE, min_length=1, max_length=64)]
Password = Annotated[str, Text(TEXT, min_length=12, max_length=1024)]
Text500 = Annotated[str, Text(TEXT, max_length=500)]
Text80 = Annotated[str, Text(TEXT, max_length=80)]
NonBlank500 = Annotated[str, Text(NON_BLANK, min_length=1, max_length=500)]
Text64 = Annotated[str, Text(TEXT, max_length=64)]
SshHost = Annotated[str, Text(SSH_HOST, min_length=1, max_length=253)]
PublicKey = Annotated[str, Text(r"[\x20-\x7e]+", min_length=1, max_length=3000, fmt=PUBLIC_KEY)]
UidRange = Annotated[str, Text(UID_RANGE, max_length=19)]
Archive = Annotated[str, Text(f"|{ARCHIVE}", max_length=201)]
Url = Annotated[str, Text(URL, min_length=8, max_length=2048)]
HttpsUrl = Annotated[str, Text(HTTPS_URL, min_length=9, max_length=2048)]
PemCerts = Annotated[
    str, Text(r"[\t\n\r\x20-\x7e]+", min_length=1, max_length=48000, fmt=PEM_CERTS)
]
Fingerprint = Annotated[str, Text(FINGERPRINT, min_length=64, max_length=71)]
PrivateKey = Annotated[
    str, Text(r"[\t\n\r\x20-\x7e]+", min_length=1, max_length=32768, fmt=PRIVATE_KEY)
]
BasicUser = Annotated[str, Text(r"[^\x00:]*", min_length=1, max_length=100)]
HeaderName = Annotated[str, Text(HEADER, min_length=1, max_length=100)]
Id = Annotated[str, Text(ID, min_length=1, max_length=64)]
Day = Annotated[str, Text(DAY, max_length=10)]
SearchText = Annotated[str, Text(NON_BLANK, min_length=1, max_length=200)]
Method = Annotated[str, Text(HEADER, min_length=1, max_length=20)]
StatusFilter = Annotated[str, Text(r"[1-5](?:[0-9]{2}|xx)", max_length=3)]
PathGlob = Annotated[str, Text(r"/[\x21-\x7e]{0,199}", min_length=1, max_length=200)]
Text200 = Annotated[str, Text(TEXT, max_length=200)]
KeyRef = Annotated[str, Text(r"[\x20-\x7e]+", min_length=1, max_length=3000)]
LabelKey = Annotated[str, Text(ROLE, min_length=1, max_length=64)]
ParamName = Annotated[str, Text(PARAM, min_length=1, max_length=100)]
Roles = Annotated[list[Role], Field(max_length=64)]
Keys = Annotated[list[PublicKey], Field(max_length=8)]


def _whole(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3 (as JSON Schema reads it)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Port = Annotated[Annotated[int, Field(ge=1, le=65535)], BeforeValidator(_whole)]
BodyBytes = Annotated[Annotated[int, Field(ge=0, le=1024 * 1024)], BeforeValidator(_whole)]


class Body(BaseModel):
    """Strict JSON: no unknown field, no coercion (``"1"`` is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Query(BaseModel):
    """A query string: unknown parameters are refused; values come as text and are read
    as the declared type (``limit=10``, ``active=true``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Empty(Body):
    """No fields: an empty object, or no body at all."""


# --- access --------------------------------------------------------------------------


class NewRequest(Body):
    target: TargetName
    account: Account | None = None
    duration: OptDuration | None = None
    reason: Text500 | None = None
    ticket: Text80 | None = None


class Approve(Body):
    comment: Comment | None = None


class Deny(Body):
    comment: NonBlank500


class WithReason(Body):
    reason: Reason


class Extend(Body):
    duration: Duration
    reason: Reason


class NewLock(Body):
    kind: Literal["user", "target"]
    name: TargetName  # user names are target names' subset
    reason: Reason
    duration: OptDuration | None = None


# --- administration ------------------------------------------------------------------


class NewUser(Body):
    name: UserName
    roles: Roles | None = None
    public_keys: Keys | None = None
    password: Password | None = None


class ChangeUser(Body):
    roles: Roles | None = None
    add_keys: Keys | None = None
    remove_keys: Annotated[list[KeyRef], Field(max_length=8)] | None = None
    enable: bool | None = None
    password: Password | None = None


Labels = Annotated[
    dict[LabelKey, Text64],
    Field(
        max_length=64,
        json_schema_extra={
            "additionalProperties": False,
            "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": f"^(?:{ROLE})$"},
        },
    ),
]
Provision = Literal["none", "ephemeral", "elevate"]


class _TargetCommon(Body):
    name: TargetName
    accounts: Annotated[list[Account], Field(max_length=64)] | None = None
    default_account: Account | None = None
    labels: Labels | None = None


class NewSshTarget(_TargetCommon):
    """An SSH target: ``host`` (and no ``url``)."""

    host: SshHost
    port: Port | None = None
    host_key: PublicKey | None = None
    provision: Provision | None = None
    uid_range: UidRange | None = None
    home_archive: Archive | None = None


class _WebTarget(_TargetCommon):
    preserve_host: bool | None = None
    sensitive_params: Annotated[list[ParamName], Field(max_length=100)] | None = None
    record_bodies: BodyBytes | None = None


class NewWebTarget(_WebTarget):
    """A web target verifying its upstream against the system's CAs (or plain http)."""

    url: Url
    tls_verify: Literal[True] | None = None


class NewWebTargetCa(_WebTarget):
    """A web target trusting its own CA bundle (https only)."""

    url: HttpsUrl
    tls_ca: PemCerts
    tls_verify: Literal[True] | None = None


class NewWebTargetPinned(_WebTarget):
    """A web target pinning its upstream's certificate by SHA-256 (https only)."""

    url: HttpsUrl
    tls_fingerprint: Fingerprint
    tls_verify: Literal[True] | None = None


class NewWebTargetInsecure(_WebTarget):
    """A web target whose upstream certificate is not checked at all (https only)."""

    url: HttpsUrl
    tls_verify: Literal[False]


def _target_kind(value: Any) -> str | None:
    if not isinstance(value, dict) or ("host" in value) == ("url" in value):
        return None
    tls = ("tls_ca" in value, "tls_fingerprint" in value, value.get("tls_verify") is False)
    if sum(tls) > 1:
        raise PydanticCustomError(
            "one_tls", "give at most one of a TLS CA, a TLS fingerprint or TLS insecure"
        )
    if "host" in value:
        return "ssh"
    if "tls_ca" in value:
        return "ca"
    if "tls_fingerprint" in value:
        return "pinned"
    return "insecure" if value.get("tls_verify") is False else "web"


NEW_TARGET = Annotated[
    Annotated[NewSshTarget, Tag("ssh")]
    | Annotated[NewWebTarget, Tag("web")]
    | Annotated[NewWebTargetCa, Tag("ca")]
    | Annotated[NewWebTargetPinned, Tag("pinned")]
    | Annotated[NewWebTargetInsecure, Tag("insecure")],
    Discriminator(
        _target_kind,
        custom_error_type="one_of",
        custom_error_message="give exactly one of host (SSH target) or url (web target)",
    ),
]
"""Exactly one of these: an SSH target, or a web target with at most one TLS setting."""


class SetProvision(Body):
    provision: Provision | None = None
    uid_range: UidRange | None = None
    home_archive: Archive | None = None


Secret = Annotated[
    str, Text(TEXT, min_length=1, max_length=32768)
]  # and the body stays under 64 KiB
Passphrase = Annotated[str, Text(TEXT, max_length=1024)]


class PasswordCredential(Body):
    kind: Literal["password"]
    value: Secret


class KeyCredential(Body):
    kind: Literal["private_key"]
    value: PrivateKey
    passphrase: Passphrase | None = None


class ProvisionerCredential(Body):
    kind: Literal["provisioner"]
    username: Account
    value: PrivateKey
    passphrase: Passphrase | None = None


class CaCredential(Body):
    kind: Literal["ssh_ca"]


class BasicCredential(Body):
    kind: Literal["http_basic"]
    username: BasicUser
    value: Secret


class HeaderCredential(Body):
    kind: Literal["http_header"]
    header: HeaderName
    value: Secret


CREDENTIAL = Annotated[
    PasswordCredential
    | KeyCredential
    | ProvisionerCredential
    | CaCredential
    | BasicCredential
    | HeaderCredential,
    Field(discriminator="kind"),
]


class NewToken(Body):
    user: UserName
    duration: OptDuration | None = None


class Signal(Body):
    action: Literal["alert", "kill", "kill_and_lock"]
    reason: Text500 | None = None
    session: Id | None = None
    user: UserName | None = None
    target: TargetName | None = None
    source: Text64 | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("session", "user", "target")
            ]
        }
    )

    @model_validator(mode="after")
    def _selects(self) -> Signal:
        if not (self.session or self.user or self.target):
            raise ValueError("select sessions by session, user or target")
        return self


# --- query strings ---------------------------------------------------------------------

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
Cursor = Annotated[str, Text(r"[A-Za-z0-9_-]{1,400}", min_length=1, max_length=400)]


class Paged(Query):
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="at most this many")] = (
        DEFAULT_LIMIT
    )
    cursor: Cursor | None = Field(None, description="the next page: `next` of the previous one")


class NoQuery(Query):
    pass


class Flagged(Paged):
    mine: bool = Field(False, description="only the caller's own")


class RequestsQuery(Flagged):
    pending: bool = Field(False, description="only pending requests")


class GrantsQuery(Flagged):
    active: bool = Field(False, description="only active grants")


class SessionsQuery(Paged):
    active: bool = Field(False, description="only live sessions")


class RecordingsQuery(Paged):
    user: UserName | None = Field(None, description="only this user's")
    target: TargetName | None = Field(None, description="only this target's")
    kind: Literal["ssh", "http"] | None = Field(None, description="only SSH or web sessions")
    since: Day | None = Field(None, description="from this day, YYYY-MM-DD")
    until: Day | None = Field(None, description="to this day, YYYY-MM-DD")


class SearchQuery(Paged):
    q: SearchText = Field(description="the text")
    session: Id | None = Field(None, description="only within this recording")


class TimelineQuery(Paged):
    method: Method | None = Field(None, description="only this method")
    status: StatusFilter | None = Field(
        None, description="only this status or class, e.g. 404 or 4xx"
    )
    path: PathGlob | None = Field(None, description="only paths matching this glob, e.g. /api/*")


Seconds = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class FramesQuery(Query):
    at: Seconds | None = Field(None, description="the screen at this many seconds")
    from_: Seconds | None = Field(None, alias="from", description="window start, seconds")
    to: Seconds | None = Field(None, description="window end (at most 60 s after from)")


class AuditQuery(Paged):
    since: Duration | None = Field(None, description="only this recent, e.g. 1h")
    actor: Text200 | None = Field(None, description="only this actor's")
    action: Text200 | None = Field(None, description="only this action")
    subject: Text200 | None = Field(None, description="only this subject")


class NotificationsQuery(Paged):
    state: Literal["pending", "sent", "dead"] | None = Field(None, description="its state")
    channel: Text200 | None = Field(None, description="one channel's")


class ProvisionedQuery(Paged):
    target: TargetName | None = Field(None, description="only this target")
    live: bool = Field(False, description="only those not yet removed")


class ReportQuery(Query):
    since: Duration = Field(description="how far back, e.g. 30d")
    target: TargetName | None = Field(None, description="one target only")
    user: UserName | None = Field(None, description="one person only")
    format: Literal["json", "csv", "html"] = Field("json", description="html: one file")
