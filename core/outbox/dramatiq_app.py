"""Entry module for the ``dramatiq`` command line (an alternative to ``insurdesk worker``)::

    insurdesk worker --no-consume          # the relay (one or more processes)
    dramatiq core.outbox.dramatiq_app --processes 4 --threads 8 --queues insurdesk.outbox

The ``dramatiq`` CLI imports this module in every worker process and uses the broker it
sets, so this is the one module that reads the settings when it is imported (from the
environment, as ``insurdesk`` does). Nothing else imports it.
"""

from __future__ import annotations

import dramatiq

from core.db import Database
from core.models import import_all_models
from core.outbox.actors import declare_actor
from core.outbox.broker import DEFAULT_NAMESPACE, is_embedded, make_broker
from core.outbox.runtime import RuntimeOptions, build_processor
from core.settings import load_settings

settings = load_settings()
if is_embedded(settings.broker_url):
    raise SystemExit("INSURDESK_BROKER_URL must name a broker (amqp:// or redis://)")
import_all_models()
database = Database(settings.effective_database_url, settings.effective_admin_database_url)
handle = make_broker(settings.broker_url, namespace=DEFAULT_NAMESPACE)
processor, _close = build_processor(database, settings, RuntimeOptions())
actor = declare_actor(handle, processor)
broker = handle.broker
dramatiq.set_broker(broker)
