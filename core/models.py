"""One place that imports every model module, so the metadata is complete (Alembic, tests)."""

from __future__ import annotations

import importlib
import pkgutil

import core


def import_all_models() -> None:
    """Import ``core.<domain>.models`` for every domain package of the core."""
    for info in pkgutil.iter_modules(core.__path__):
        if info.ispkg:
            try:
                importlib.import_module(f"core.{info.name}.models")
            except ModuleNotFoundError as exc:
                if exc.name != f"core.{info.name}.models":
                    raise
