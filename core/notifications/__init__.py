"""Notifications to customers and staff: templates, recipients, channels, the delivery log.

Notification events come from the outbox (:mod:`core.outbox`); :mod:`.delivery` plans,
records and sends them, idempotently per recipient and channel. See docs/background.md.
"""
