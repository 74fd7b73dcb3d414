"""Webhooks: integrators subscribe URLs to events and receive signed deliveries."""
