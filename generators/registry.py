"""The generator registry: built-in families, classes registered with ``@register``, and entry points.

A generator family is one module and its test. Three ways in, looked up in this order:

* the built-in families: every public module of ``genguard.generators`` is imported
  once, on the first lookup, and registers its class with ``@register``
  (as scikit-learn's ``all_estimators`` walks its package);
* ``@register`` on a user's class, in code that has been imported;
* the entry-point group ``genguard.generators`` of installed distributions, e.g. in
  a ``pyproject.toml``::

      [project.entry-points."genguard.generators"]
      myflow = "mypackage.flows:MyFlow"

  imported only when that name is asked for (or listed), so a broken plug-in
  never breaks the others.

Loading a saved model never imports the module that its ``config.json`` names:
a file decides nothing about which code runs. A class that is not registered is
refused with the ways to register it.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterable

from genguard.generators.base import Generator, GeneratorError

#: The entry-point group through which installed distributions add generators.
ENTRY_POINT_GROUP = "genguard.generators"
#: Modules of this package that hold no generator family.
_NOT_FAMILIES = frozenset({"base", "data", "registry", "checks"})

_classes: dict[str, type] = {}
_builtins_loaded = False
#: Registration problems found while listing (an entry point that clashes or fails to import).
_problems: dict[str, str] = {}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type | None = None, *, name: str | None = None) -> Any:
    """Class decorator: make a generator reachable by name (``make_generator``, ``load``, the CLI).

    Use as ``@register`` or ``@register(name="myflow")`` (the default is ``cls.name``). The class is
    checked against the protocol first (:func:`generators.checks.class_problems`); a name already
    taken by another class is refused.
    """

    def add(klass: type) -> type:
        from genguard.generators.checks import ProtocolError, class_problems

        key = name or getattr(klass, "name", None)
        if name is not None and getattr(klass, "name", None) != name:
            raise GeneratorError(f"register(name={name!r}): {klass.__name__}.name is {getattr(klass, 'name', None)!r}; "
                                 f"set the class attribute name = {name!r} (it is saved in config.json)")
        problems = class_problems(klass)
        if problems:
            raise ProtocolError(klass.__name__, problems)
        taken = _classes.get(key)
        if taken is not None and _qualname(taken) != _qualname(klass):
            raise GeneratorError(f"generator name {key!r} is already taken by {_qualname(taken)}; "
                                 f"give {_qualname(klass)} another name")
        _classes[key] = klass
        return klass

    if cls is not None:
        return add(cls)
    return add


def unregister(name: str) -> None:
    """Remove a registered name (for tests and interactive sessions)."""
    _classes.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import genguard.generators as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_FAMILIES:
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # the first distribution on sys.path wins, as for console scripts
    return found


def _origin(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    where = f" of distribution {dist.name}" if dist is not None and getattr(dist, "name", None) else ""
    return f"entry point {ep.name} = {ep.value!r}{where}"


def _load_entry_point(ep: Any) -> type:
    from genguard.generators.checks import ProtocolError, class_problems

    try:
        klass = ep.load()
    except Exception as exc:  # a plug-in's own import error, whatever it is, must not look like ours
        raise GeneratorError(f"generator {ep.name!r} from {_origin(ep)} failed to import: "
                             f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(klass, type):
        raise GeneratorError(f"{_origin(ep)} names {type(klass).__name__}, not a class")
    if getattr(klass, "name", None) != ep.name:
        raise GeneratorError(f"{_origin(ep)}: the class's name is {getattr(klass, 'name', None)!r}; "
                             f"make the entry point's name and the class attribute name equal")
    problems = class_problems(klass)
    if problems:
        raise ProtocolError(f"{klass.__name__} ({_origin(ep)})", problems)
    _classes.setdefault(ep.name, klass)
    return klass


def available() -> list[str]:
    """The names of every registered generator: built-in, ``@register``-ed and entry points."""
    _load_builtins()
    return sorted(set(_classes) | set(_entry_points()))


def how_to_register(name: str, saved_class: str | None = None) -> str:
    """The ways to make ``name`` known, for error messages."""
    cls = saved_class.rsplit(".", 1) if saved_class and "." in saved_class else None
    target = f"{cls[0]}:{cls[1]}" if cls else "yourpackage.module:YourClass"
    return (f"register it: decorate the class with @genguard.generators.register and import its module first, "
            f"or declare the entry point [project.entry-points.\"{ENTRY_POINT_GROUP}\"] {name} = \"{target}\" "
            "in its package's pyproject.toml and install it")


def get_generator_class(name: str) -> type[Generator]:
    """The class registered under ``name``; unknown names fail with the choices and how to register."""
    if not isinstance(name, str):
        raise GeneratorError(f"a generator name must be a string, got {type(name).__name__}")
    _load_builtins()
    if name in _classes:
        return _classes[name]  # type: ignore[return-value]
    ep = _entry_points().get(name)
    if ep is not None:
        return _load_entry_point(ep)  # type: ignore[return-value]
    raise GeneratorError(f"unknown generator {name!r}; available: {', '.join(available())}; "
                         f"to add one, {how_to_register(name)}")


def registered() -> dict[str, type]:
    """Every registered class by name, importing entry points; one that fails is left out and its
    reason kept in :func:`problems`."""
    out: dict[str, type] = {}
    _load_builtins()
    for name, ep in _entry_points().items():
        taken = _classes.get(name)
        if taken is not None and f"{taken.__module__}:{taken.__qualname__}" != ep.value:
            _problems[name] = f"{_origin(ep)} is ignored: the name is taken by {_qualname(taken)}; rename one"
    for name in available():
        try:
            out[name] = get_generator_class(name)
            if "is ignored" not in _problems.get(name, ""):
                _problems.pop(name, None)
        except GeneratorError as exc:
            _problems[name] = str(exc)
    return out


def problems() -> dict[str, str]:
    """Names that could not be loaded by the last :func:`registered` call, with the reason."""
    return dict(_problems)


def describe(cls: type) -> dict[str, Any]:
    """What a generator class says about itself, for ``genguard train --list`` and reports."""
    doc = (cls.__doc__ or "").strip().splitlines()
    modalities = tuple(getattr(cls, "modalities", ()) or ())
    modality = cls.__dict__.get("modality", getattr(cls, "modality", None))
    if not isinstance(modality, str):  # a per-instance property (gmm, dpmerf): the class default is the first
        modality = modalities[0] if modalities else "image"
    return {
        "name": cls.name,
        "class": _qualname(cls),
        "modality": modality,
        "modalities": list(modalities or (modality,)),
        "conditions": list(getattr(cls, "conditional_on", ())),
        "default_data": getattr(cls, "default_data", None),
        "dp_mechanism": getattr(cls, "dp_mechanism", "none"),
        "watermarkable": bool(getattr(cls, "watermarkable", False)),
        "summary": doc[0].replace("``", "") if doc else "",
    }


def iter_described(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    classes = registered()
    return [describe(classes[n]) for n in (names or sorted(classes)) if n in classes]


__all__: list[str] = ["ENTRY_POINT_GROUP", "available", "describe", "get_generator_class", "how_to_register",
                      "iter_described", "problems", "register", "registered", "unregister"]
