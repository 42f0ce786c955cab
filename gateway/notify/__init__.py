"""Notifications: what happened to requests, grants and sessions, sent to webhooks, chat and
mail from a durable outbox with retries and dead letters."""
