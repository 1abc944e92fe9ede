"""Components chosen by name, from built-ins and from other installed packages' entry points.

One ``Registry`` per kind of component (proposers, embedders, ...). A built-in is registered as a
``"module:attribute"`` string (imported only when chosen, so heavy dependencies load on demand)
or as a callable. Another package adds its own under the entry-point group, in its pyproject::

    [project.entry-points."defectkit.proposers"]
    my-proposer = "my_package.proposers:MyProposer"

after which ``create_proposer("my-proposer", **options)`` builds it like a built-in.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any, Callable

from defectkit.errors import DefectkitError


class Registry:
    def __init__(self, kind: str, group: str):
        self.kind = kind  # "proposer", used in messages
        self.group = group  # entry-point group, e.g. "defectkit.proposers"
        self._builtin: dict[str, str | Callable] = {}

    def register(self, name: str, target: str | Callable | None = None):
        """Register ``target`` (a callable or ``"module:attribute"``) as ``name``; without a
        target, return a decorator."""
        if target is None:
            def decorator(obj):
                self._builtin[name] = obj
                return obj

            return decorator
        self._builtin[name] = target
        return target

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Every name that can be chosen: built-ins first, then plugins."""
        plugins = [name for name in sorted(self._entry_points()) if name not in self._builtin]
        return list(self._builtin) + plugins

    def get(self, name: str) -> Callable:
        """The factory registered as ``name`` (a built-in wins over a plugin of the same name)."""
        if name in self._builtin:
            target = self._builtin[name]
            return _import(target, f"built-in {self.kind} {name!r}") if isinstance(target, str) else target
        plugin = self._entry_points().get(name)
        if plugin is None:
            raise DefectkitError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        try:
            return plugin.load()
        except Exception as exc:  # a broken plugin must not look like a defectkit bug
            source = f"{plugin.dist.name} " if getattr(plugin, "dist", None) else ""
            raise DefectkitError(
                f"{self.kind} {name!r} from package {source}({plugin.value}, entry point group "
                f"{self.group}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc

    def create(self, name: str, **options: Any):
        """Build the component registered as ``name`` with ``options``."""
        factory = self.get(name)
        try:
            signature = inspect.signature(factory)
            signature.bind(**options)
        except TypeError as exc:
            raise DefectkitError(f"{self.kind} {name!r} does not take options {sorted(options)}: {exc}") from exc
        except ValueError:  # no introspectable signature: let the call decide
            return factory(**options)
        for key, value in options.items():
            default = signature.parameters[key].default if key in signature.parameters else inspect.Parameter.empty
            if not same_kind(default, value):
                raise DefectkitError(f"{self.kind} {name!r}: option {key} must be {type(default).__name__} like its "
                                     f"default {default!r}, got {value!r}")
        return factory(**options)


def same_kind(default: Any, value: Any) -> bool:
    """A number where the default is a number, a yes/no where it is one; None (off) and anything
    else goes."""
    if value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _import(target: str, what: str) -> Callable:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise DefectkitError(f"{what}: {module_name} has no {attribute!r}") from exc
