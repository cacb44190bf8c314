"""Plugin modules: how users add attacks, datasets, criteria, controls, tables... without forking.

A plugin is an ordinary Python module that declares entries as module-level tuples named after the
axis they extend (``ATTACKS``, ``DATASETS``, ``MODEL_FAMILIES``, ``OBJECTIVES``,
``PRUNING_CRITERIA``, ``CONTROLS``, ``TABLES``), using the entry classes of each axis. Nothing is
registered by side effect: the registries read these tuples (see :mod:`core.registry`).

Plugins are named in two places, both read when a registry is first needed:

* the environment variable ``BOOSTING_TICKETS_PLUGINS``: comma-separated module names (importable
  from ``sys.path``) or paths of ``.py`` files;
* the entry-point group ``boosting_tickets.plugins`` of installed distributions (each entry point
  names a module).

``docs/extending.md`` shows one worked plugin per axis.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import UserError

ENV = "BOOSTING_TICKETS_PLUGINS"
ENTRY_POINT_GROUP = "boosting_tickets.plugins"
#: The module attributes a plugin may declare, one per registry axis.
AXES = (
    "ATTACKS",
    "DATASETS",
    "MODEL_FAMILIES",
    "OBJECTIVES",
    "PRUNING_CRITERIA",
    "CONTROLS",
    "TABLES",
)


def contributions(attr: str, plugins: str) -> tuple[Any, ...]:
    """Entries declared under ``attr`` by the plugins in ``plugins`` (the env value) and by
    installed entry points, in that order."""
    out: list[Any] = []
    for module in load(plugins):
        declared = getattr(module, attr, ())
        if not isinstance(declared, tuple | list):
            raise UserError(
                f"plugin {module.__name__} declares {attr} as {type(declared).__name__}; "
                "it must be a tuple of entries"
            )
        out.extend(declared)
    return tuple(out)


@functools.lru_cache(maxsize=16)
def load(plugins: str) -> tuple[ModuleType, ...]:
    """Import the plugin modules named in ``plugins`` and by entry points (each once)."""
    names = [p.strip() for p in plugins.split(",") if p.strip()]
    modules = [_import(n) for n in names] + list(_entry_point_modules())
    unique: dict[str, ModuleType] = {m.__name__: m for m in modules}
    return tuple(unique.values())


def _import(name: str) -> ModuleType:
    try:
        if name.endswith(".py"):
            path = Path(name)
            if not path.is_file():
                raise UserError(f"plugin file {path} named in {ENV} does not exist")
            mod_name = f"boosting_tickets_plugin_{path.stem.replace('-', '_')}"
            if mod_name in sys.modules:
                return sys.modules[mod_name]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(name)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken plugin fails in any way; say which one
        sys.modules.pop(f"boosting_tickets_plugin_{Path(name).stem}", None)
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"plugin {name!r} named in {ENV} cannot be imported ({type(exc).__name__}: {detail}); "
            f"fix the plugin or remove it from {ENV}"
        ) from None


def _entry_point_modules() -> tuple[ModuleType, ...]:
    from importlib.metadata import entry_points

    return tuple(_import(ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP))
