"""Periodic work (deadline sweeps, digests, retention ...) from one scheduler, safe with replicas.

Jobs are registered in one place (:func:`core.scheduler.jobs.default_jobs`). Each job has
fixed *slots* (every minute, every day at 00:00 UTC ...); a run of a slot is claimed by
inserting ``(job, slot)`` into ``scheduler_runs``, whose unique constraint lets exactly one
replica win, on SQLite and PostgreSQL alike. See docs/background.md.
"""

from core.scheduler import reminders as _reminders  # noqa: F401  (registers ORM events)
