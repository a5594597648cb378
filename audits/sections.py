"""Audit sections: one class per concern of the release report, a registry by modality, one result type with coded reasons.

A section computes one part of ``report.json`` from a shared
:class:`AuditContext` (the samples, the real train and holdout data, the
policy, and whatever the audit computes once from the real data, such as the
image feature extractor), declares the gates it supports by default, and adds
its lines to the terminal summary. :class:`~genguard.audits.ReleaseAudit`
runs the registered sections of the samples' modality in registration order::

    from genguard.audits.sections import AuditSection, Gate, Result, Reason, register_section

    @register_section
    class MySection(AuditSection):
        name = "my_metric"
        key = "fidelity.my_metric"      # where it goes in report.json
        modalities = ("image",)
        gates = (Gate("fidelity.my_metric", "min", 0.5, (0.0, 1.0)),)

        def compute(self, ctx):
            if ctx.holdout is None:
                return Result.missing(Reason.NO_HOLDOUT)
            return Result(value=0.7, interval=(0.6, 0.8))

A metric that cannot be computed is a :class:`Result` with ``value`` ``None``
and a code from the closed set :class:`Reason` (each with a sentence for a
person, as c2pa-python reports validation codes), plus the specifics in
``detail``. In report.json it reads ``{"value": null, "reason": "<sentence>:
<detail>", "code": "NO_HOLDOUT"}``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

from genguard.audits import AuditError

MODALITIES = ("image", "text", "tabular", "audio")


class Reason(str, enum.Enum):
    """Why a metric was not computed: a closed set of codes, each with the sentence shown to a person."""

    NOT_APPLICABLE_MODALITY = "the check does not apply to outputs of this modality"
    NO_REFERENCE = "no reference data to compare with"
    NO_HOLDOUT = "no holdout data given: no real reference level to compare with"
    NO_LABELS = "no group labels to compute it from"
    NO_LEDGER = "no privacy ledger was given"
    NO_GENERATOR = "it needs the generator itself (to prompt or query), not only its outputs"
    NOT_GIVEN = "the inputs it needs were not given to this audit"
    NOT_RUN = "this check was not run in this audit"
    TOO_FEW_SAMPLES = "too few items to compute it"
    TOO_SMALL = "the items are too small for this check"
    DEGENERATE_REFERENCE = "the real data has no spread on this measure: no reference level"
    NOT_NUMERIC = "the records are not numeric"
    DEPENDENCY_MISSING = "an optional dependency is not installed"
    FAILED = "the computation failed on this input"

    @property
    def sentence(self) -> str:
        return self.value


@dataclass(frozen=True)
class Result:
    """One figure of a section: ``value``, optional ``interval`` and extra fields, or a coded reason."""

    value: Any = None
    interval: tuple[float, float] | None = None
    reason: Reason | None = None
    detail: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.value is None and self.reason is None:
            raise AuditError("a Result without a value needs a Reason code")
        if self.reason is not None and not isinstance(self.reason, Reason):
            raise AuditError(f"reason must be an audits.sections.Reason, got {self.reason!r}")

    @classmethod
    def missing(cls, reason: Reason, detail: str | None = None, **extra: Any) -> "Result":
        return cls(value=None, reason=reason, detail=detail, extra=extra)

    @property
    def computed(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["value"] = self.value
        if self.interval is not None:
            out["ci"] = [float(self.interval[0]), float(self.interval[1])]
        if self.reason is not None:
            out["reason"] = self.reason.sentence + (f": {self.detail}" if self.detail else "")
            out["code"] = self.reason.name
        return out


def missing(reason: Reason, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    """``Result.missing(...).to_dict()``: the report entry of a metric that was not computed."""
    return Result.missing(reason, detail, **extra).to_dict()


@dataclass(frozen=True)
class Gate:
    """A default gate a section offers: report path, ``min`` or ``max``, threshold, allowed threshold range."""

    path: str
    op: str
    threshold: float
    range: tuple[float, float] = (-float("inf"), float("inf"))

    def __post_init__(self) -> None:
        if self.op not in ("min", "max"):
            raise AuditError(f"gate {self.path}: op must be 'min' or 'max', got {self.op!r}")


class AuditContext:
    """What every section of one audit reads: inputs, policy, and values computed once and shared.

    ``shared(name, make)`` computes ``make()`` the first time a section asks
    for ``name`` and returns the same object to every later section (the
    image feature extractor and the real-data features are fitted once per
    audit this way).
    """

    def __init__(self, *, modality: str, samples: Any, train: Any, holdout: Any, policy: Mapping[str, Any],
                 seed: int, inputs: Mapping[str, Any] | None = None) -> None:
        self.modality = modality
        self.samples = samples
        self.train = train
        self.holdout = holdout
        self.policy = policy
        self.seed = seed
        self.inputs = dict(inputs or {})
        #: the audited items as the sections read them: clipped image array, list of texts, or the DataFrame
        self.items: Any = samples
        self.artefacts: dict[str, Any] = {}
        self.data: dict[str, Any] = {}
        self._shared: dict[str, Any] = {}

    @property
    def alpha(self) -> float:
        return float(self.policy["level"])

    def shared(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._shared:
            self._shared[name] = make()
        return self._shared[name]


class AuditSection:
    """Base class of a report section. Subclasses set the class attributes and implement :meth:`compute`.

    ``key`` is a dotted path in report.json; ``compute`` returns a dict (or a
    :class:`Result`) that is merged into what is already there, so a section
    can add a sub-key (``fidelity.diversity``) to another section's output.
    """

    name: ClassVar[str] = ""
    key: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    gates: ClassVar[tuple[Gate, ...]] = ()
    #: gates a policy may name (their threshold range is checked) that are not in the default set
    offered: ClassVar[tuple[Gate, ...]] = ()
    #: progress-bar label; empty for sections too quick to show
    step: ClassVar[str] = ""

    def compute(self, ctx: AuditContext) -> Mapping[str, Any] | Result:
        raise NotImplementedError(f"{type(self).__name__}.compute(ctx) must return a dict or a Result")

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(label, value) lines of the terminal summary, read from the finished report.json ``data``."""
        return []

    def html(self, data: Mapping[str, Any], artefacts: Mapping[str, Any]) -> Any:
        """This section's block of report.html (``audits.html.render_block`` escapes it), or None."""
        return None


_SECTIONS: dict[str, type[AuditSection]] = {}


def register_section(cls: type[AuditSection]) -> type[AuditSection]:
    """Class decorator: add a section to the registry (its ``name`` must be new)."""
    if not (isinstance(cls, type) and issubclass(cls, AuditSection)):
        raise AuditError(f"register_section takes an AuditSection subclass, got {cls!r}")
    if not cls.name or not cls.key:
        raise AuditError(f"{cls.__name__}: set the class attributes name and key")
    bad = [m for m in cls.modalities if m not in MODALITIES]
    if bad:
        raise AuditError(f"{cls.__name__}: unknown modalities {bad}; known: {list(MODALITIES)}")
    if cls.__module__ not in _BUILTIN_MODULES:
        _load_builtin()  # so that a new section cannot take a built-in's name before the built-ins load
    if cls.name in _SECTIONS and _SECTIONS[cls.name] is not cls:
        raise AuditError(f"an audit section named {cls.name!r} is already registered ({_SECTIONS[cls.name].__name__})")
    _SECTIONS[cls.name] = cls
    return cls


def unregister_section(name: str) -> None:
    _SECTIONS.pop(name, None)


_BUILTIN_MODULES = ("genguard.audits.builtin_sections", "genguard.audits.text_diversity",
                    "genguard.audits.human_section", "genguard.audits.audio_sections")


#: Entry-point group through which an installed package adds audit sections: each entry point names a
#: module (or a callable) whose import registers its sections with :func:`register_section`.
ENTRY_POINT_GROUP = "genguard.audit_sections"
#: Plug-ins that failed to load, by entry-point name, with the reason (never imported half-way silently).
SECTION_PROBLEMS: dict[str, str] = {}
_entry_points_loaded = False


def _load_builtin() -> None:
    global _entry_points_loaded
    from genguard.audits import builtin_sections  # noqa: F401 - registers the built-in sections
    from genguard.audits import text_diversity  # noqa: F401
    from genguard.audits import human_section  # noqa: F401
    from genguard.audits import audio_sections  # noqa: F401

    if _entry_points_loaded:
        return
    _entry_points_loaded = True  # before loading: a plug-in that registers calls back into the registry
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            hook = ep.load()
            if isinstance(hook, type) and issubclass(hook, AuditSection):
                if _SECTIONS.get(hook.name) is not hook:
                    register_section(hook)
            elif callable(hook):
                hook()
        except Exception as exc:
            SECTION_PROBLEMS[ep.name] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def sections_for(modality: str) -> list[AuditSection]:
    """Instances of the registered sections that apply to ``modality``, in registration order."""
    if modality not in MODALITIES:
        raise AuditError(f"no audit sections for modality {modality!r}; known: {list(MODALITIES)}")
    _load_builtin()
    return [cls() for cls in _SECTIONS.values() if modality in cls.modalities]


def registered_sections() -> dict[str, type[AuditSection]]:
    _load_builtin()
    return dict(_SECTIONS)


#: Order of the default gates in a report, by top-level key (sections of other keys follow, in registration order).
GATE_ORDER = ("bias", "memorization", "fidelity", "privacy")


def default_gates(modality: str) -> dict[str, dict[str, float]]:
    """The default gates of ``modality``: every gate its registered sections declare, as policy entries."""
    gates = [g for s in sections_for(modality) for g in s.gates]
    rank = {k: i for i, k in enumerate(GATE_ORDER)}
    gates.sort(key=lambda g: rank.get(g.path.split(".")[0], len(GATE_ORDER)))  # stable within a key
    return {g.path: {g.op: g.threshold} for g in gates}


def gate_ranges() -> dict[str, tuple[float, float]]:
    """Allowed threshold range of every gate any registered section declares or offers."""
    _load_builtin()
    return {g.path: g.range for cls in _SECTIONS.values() for g in (*cls.gates, *cls.offered)}


def set_path(data: dict[str, Any], path: str, value: Mapping[str, Any] | Result) -> None:
    """Merge ``value`` into ``data`` at dotted ``path`` (creating or replacing a ``None``/non-dict node)."""
    if isinstance(value, Result):
        value = value.to_dict()
    parts = path.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    last = parts[-1]
    if isinstance(node.get(last), dict) and node[last].get("value", 0) is not None:
        node[last].update(value)
    else:
        node[last] = dict(value)


def summary_rows(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The one terminal summary of a report: each section's lines for the report's modality, then the gates."""
    modality = (data.get("generator") or {}).get("modality") or "image"
    rows: list[tuple[str, str]] = []
    for s in sections_for(modality if modality in MODALITIES else "image"):
        rows.extend(s.summary_rows(data))
    gates = data.get("gates") or []
    if isinstance(gates, list) and gates:
        for g in gates:
            verdict = {True: "pass", False: "FAIL", None: "not evaluated"}.get(g.get("passed"), "?")
            rows.append((f"gate {g.get('name')} {g.get('op')} {g.get('threshold')}",
                         f"{verdict} ({fmt(g.get('value'), '.4g')})"))
        passed = sum(1 for g in gates if g.get("passed") is True)
        failed = [g.get("name", "?") for g in gates if g.get("passed") is False]
        skipped = sum(1 for g in gates if g.get("passed") is None)
        text = f"{passed} of {len(gates)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")
        if skipped:
            text += f", {skipped} not evaluated"
        rows.append(("release gates", text))
    return rows


def get(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of report.json (a ``{"value": ...}`` node gives its value; missing: None)."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, Mapping) and "value" in node:
        return node["value"]
    return node


def fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def row(label: str, data: Mapping[str, Any], paths: Iterable[str], spec: str = ".3f", suffix: str = "") -> tuple[str, str]:
    return label, " / ".join(fmt(get(data, p), spec) for p in paths) + suffix
