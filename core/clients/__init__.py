"""Tenant-managed API clients: the HTTP API over :mod:`core.auth.services`."""
