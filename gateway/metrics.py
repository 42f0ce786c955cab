"""Prometheus metrics of one node, on a registry of its own. Labels never carry secrets:
only fixed outcome, direction, method and reason words, target names and status codes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge(
            "lockgate_sessions_active", "Live sessions on this node", registry=r
        )
        self.sessions_total = Counter(
            "lockgate_sessions_total", "Sessions by outcome", ["outcome"], registry=r
        )
        self.bytes_total = Counter(
            "lockgate_bytes_total", "Session bytes by direction", ["direction"], registry=r
        )
        self.auth_failures = Counter(
            "lockgate_auth_failures_total", "Failed logins", ["method"], registry=r
        )
        self.provision_retries = Counter(
            "lockgate_provision_retries_total",
            "Failed attempts to take provisioned accounts or elevation away, by target",
            ["target"],
            registry=r,
        )
        self.grants_active = Gauge("lockgate_grants_active", "Active grants", registry=r)
        self.requests_pending = Gauge("lockgate_requests_pending", "Pending requests", registry=r)
        self.kills_total = Counter(
            "lockgate_kills_total", "Sessions ended by a trigger", ["reason"], registry=r
        )
        self.kill_latency = Histogram(
            "lockgate_kill_latency_seconds", "From kill request to both legs closed", registry=r
        )
        self.upstream_connect = Histogram(
            "lockgate_upstream_connect_seconds",
            "Time to connect and authenticate upstream",
            registry=r,
        )
        self.http_requests = Counter(
            "lockgate_http_requests_total",
            "Web-target requests by target and status (0: no response)",
            ["target", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "lockgate_http_request_duration_seconds",
            "Web-target requests, from arrival to the last byte",
            ["target"],
            registry=r,
        )
        self.http_fastpath = Counter(
            "lockgate_http_fastpath_requests_total",
            "Web-target requests relayed on the fast path (the rest went through aiohttp)",
            registry=r,
        )
        self.http_spliced = Counter(
            "lockgate_http_spliced_bytes_total",
            "Response body bytes the kernel moved from target to browser (splice), unread by"
            " the gateway",
            registry=r,
        )
        self.cluster_listen_reconnects = Counter(
            "lockgate_cluster_listen_reconnects_total",
            "Times the PostgreSQL LISTEN connection was re-opened after it was lost",
            registry=r,
        )
        self.db_outage_queued = Gauge(
            "lockgate_db_writes_owed",
            "Writes owed to the database (queued durably during an outage)",
            registry=r,
        )
        self.index_lag = Gauge(
            "lockgate_recording_index_lag_seconds",
            "How far the recording indexer is behind",
            registry=r,
        )
        self.stream_errors = Counter(
            "lockgate_audit_stream_errors_total",
            "Audit sink failures (each one resends from the sink's cursor)",
            ["sink"],
            registry=r,
        )


def kill_reason(reason: str) -> str:
    """A fixed label word for a free-text termination reason."""
    words = (
        "expired",
        "revoked",
        "locked",
        "anomaly",
        "signal",
        "shutdown",
        "recording",
        "terminated by",
        "disconnected",
    )
    for word in words:
        if word in reason:
            return word.replace("terminated by", "admin")
    return "other"
