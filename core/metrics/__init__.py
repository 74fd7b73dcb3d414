"""Observability of background work: the tenant admin's figures and Prometheus metrics.

* ``GET /api/v1/ops/metrics`` — one tenant's outbox (by status, lag = age of the oldest due
  pending row, queued = handed to the broker and not yet processed), deliveries by status and
  dead letters. Tenant administrators only, their tenant only.
* ``GET /metrics`` — the platform's figures in the Prometheus text format (prometheus-client),
  aggregated over tenants (no tenant labels), plus the broker's queue depth.
"""
