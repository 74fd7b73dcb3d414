"""The plugin framework: the registry of installed plugins, per-tenant enablement and settings
along the organization tree, their cache, and the flows that call plugins for the core.

The hook specifications are in :mod:`core.hookspecs`; built-in plugins in ``plugins/``.
"""
