"""Audit streaming to a SIEM: every committed audit event, at least once, to syslog and/or a
JSON-lines file, from a durable cursor in the database."""
