"""Release policy: audit settings and gate thresholds, from defaults, a dict or a YAML file; gates evaluated on a report.

A policy file looks like::

    level: 0.05                 # test level for every flag
    on_missing: fail            # a gate whose metric could not be computed fails (the default), or: skip
    bias:
      attribute: label
      target: reference         # reference | uniform | {"0": 0.1, ...}
      min_effect: 0.02          # share points a group must be off before it is flagged
    memorization:
      distance_ratio: 0.3       # Carlini-style ratio below which a sample is a suspected copy (a cap when calibrated)
      calibrate: true           # set the threshold on real-vs-real ratios (holdout and leave-one-out training records)
      false_copy_rate: 0.001    # share of real records not trained on that the calibrated threshold may call copies
      nth_neighbour: 20
      max_shift: 1
    text:                       # text audits (ReleaseAudit.run_text with a generator)
      domains: [gender, race, religious_belief, profession]
      samples_per_prompt: 1
      min_effect: 0.1           # VADER compound points between the best- and worst-treated group
    tabular:
      group: sex
      target: target
    gates:                      # metric path in report.json -> {max: x} or {min: x}
      bias.flagged_count: {max: 0}
      privacy.epsilon: {max: 10, allow_missing: true}  # opt out, visibly: a model without DP passes this gate
      memorization.near_duplicate_rate: {max: 0.01}
      fidelity.diversity.recall_relative: {min: 0.5}   # lower end of its interval, relative to real data

Each gate becomes ``{name, value, threshold, op, passed}`` in ``report.gates``. A gate whose metric
could not be computed is *not evaluated* and fails (``passed: false``), unless its entry says
``allow_missing: true`` (or the policy ``on_missing: skip``): then ``passed`` is null and the reason
says the policy allowed it. When the ledger does not verify, every ``privacy.*`` gate fails. A gate
whose report section does not exist, or whose name is one letter off a known gate, is refused
before any work.
A policy that states ``gates`` replaces the default gates entirely (it says
what it requires); other sections are merged key by key into the defaults.
A list-valued metric (``bias.flagged``) is gated on its length.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

from genguard.audits import AuditError

DEFAULT_POLICY: dict[str, Any] = {
    "level": 0.05,
    "on_missing": "fail",
    "bias": {"attribute": "label", "target": "reference", "min_effect": 0.02, "mc_draws": 4000},
    "fidelity": {"prdc_k": 5},
    "memorization": {"distance_ratio": 0.3, "nth_neighbour": 20, "max_shift": 1, "calibrate": True,
                     "false_copy_rate": 0.001},
    "text": {"domains": None, "samples_per_prompt": 1, "min_effect": 0.1},
    "tabular": {"group": "sex", "target": "target"},
    "gates": None,  # the image gates (set below); load_policy gives the audited modality's default gates
}


def _defaults(modality: str) -> dict[str, dict[str, float]]:
    """The gates the registered audit sections of ``modality`` declare (audits.sections.default_gates)."""
    from genguard.audits.sections import default_gates

    return default_gates(modality)


#: The default gates of each modality when the policy states none: derived from the registered audit
#: sections (each section declares its gates); a snapshot of the built-in ones. See the README for each threshold.
DEFAULT_GATES: dict[str, dict[str, dict[str, float]]] = {m: _defaults(m) for m in ("image", "text", "tabular", "audio")}
DEFAULT_POLICY["gates"] = copy.deepcopy(DEFAULT_GATES["image"])

def gate_ranges() -> dict[str, tuple[float, float]]:
    """Allowed threshold range of each gate whose metric has a known range, as the audit sections declare it: a
    threshold outside it can never (or always) pass and is a mistake. Shares live in [0, 1]; figures relative to
    real data in [0, 10]."""
    from genguard.audits.sections import gate_ranges as ranges

    return ranges()


GATE_RANGES: dict[str, tuple[float, float]] = gate_ranges()

_SECTIONS = ("level", "on_missing", "bias", "fidelity", "memorization", "gates", "text", "tabular")


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if k == "gates":  # a policy's gates replace the defaults entirely: it states what it requires
            out[k] = dict(v) if isinstance(v, Mapping) else v
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


#: Deepest YAML nesting a policy may have (the format above nests three levels).
MAX_POLICY_DEPTH = 32
#: Largest policy file read (bytes).
MAX_POLICY_BYTES = 1024 * 1024


def _safe_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with a nesting limit and no aliases (anchors can multiply a small file's size)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
            if self.check_event(yaml.AliasEvent):
                raise AuditError(f"{source}: YAML aliases (*anchor references) are not allowed in a policy")
            self.depth += 1
            try:
                if self.depth > MAX_POLICY_DEPTH:
                    raise AuditError(f"{source}: policy YAML nested deeper than {MAX_POLICY_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditError(f"{source}: unreadable policy YAML ({first})") from None
    except RecursionError:
        raise AuditError(f"{source}: policy YAML nested too deeply") from None


def load_policy(policy: Any = None, modality: str = "image") -> dict[str, Any]:
    """Defaults merged with a dict or a YAML file; raises :class:`AuditError` naming the file on bad input.

    A policy that states no ``gates`` gets the default gates of ``modality``
    (``DEFAULT_GATES``: image, text or tabular).

    Every setting is type- and range-checked here, before anything is computed
    or allocated with it.
    """
    if modality not in DEFAULT_GATES:
        raise AuditError(f"no default gates for modality {modality!r}; known: {sorted(DEFAULT_GATES)}")
    if policy is None:
        out = copy.deepcopy(DEFAULT_POLICY)
        out["gates"] = _defaults(modality)
        return out
    source = "policy"
    if isinstance(policy, (str, os.PathLike)):
        from genguard.generators._io import read_text_bounded

        path = Path(policy)
        source = str(path)
        raw = _safe_yaml(read_text_bounded(path, MAX_POLICY_BYTES, AuditError, "policy file"), source)
        if raw is None:
            raw = {}
        policy = raw
    if not isinstance(policy, Mapping):
        raise AuditError(f"{source}: a policy must be a mapping of settings, got {type(policy).__name__}")
    unknown = sorted(set(map(str, policy)) - set(_SECTIONS))
    if unknown:
        raise AuditError(f"{source}: unknown policy keys {unknown}; known: {list(_SECTIONS)}")
    for k in ("bias", "fidelity", "memorization", "text", "tabular"):
        if k in policy and not isinstance(policy[k], Mapping):
            raise AuditError(f"{source}: {k} must be a mapping of settings, got {type(policy[k]).__name__}")
    if "gates" in policy and policy["gates"] is not None and not isinstance(policy["gates"], Mapping):
        raise AuditError(f"{source}: gates must map a metric path to {{max: x}} or {{min: x}}, "
                         f"got {type(policy['gates']).__name__}")
    merged = _merge(DEFAULT_POLICY, policy)
    if "gates" not in policy:
        merged["gates"] = _defaults(modality)
    _validate(merged, source)
    return merged


def _number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_in(p: Mapping[str, Any], section: str, key: str, lo: int, hi: int, source: str) -> None:
    v = p[section].get(key)
    if v is None and key not in p[section]:
        return
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise AuditError(f"{source}: {section}.{key} must be an integer in [{lo:,}, {hi:,}], got {v!r}")


def _str_or_none(p: Mapping[str, Any], section: str, key: str, source: str) -> None:
    v = p[section].get(key)
    if v is not None and not isinstance(v, str):
        raise AuditError(f"{source}: {section}.{key} must be a string, got {v!r}")


def _validate(p: dict[str, Any], source: str) -> None:
    lvl = p.get("level")
    if not _number(lvl) or not 0 < lvl < 1:
        raise AuditError(f"{source}: level must be a number in (0, 1), got {lvl!r}")
    if p.get("on_missing") not in ("skip", "fail"):
        raise AuditError(f"{source}: on_missing must be 'skip' or 'fail', got {p.get('on_missing')!r}")
    me = p["bias"].get("min_effect")
    if not _number(me) or not 0 <= me < 1:
        raise AuditError(f"{source}: bias.min_effect must be a share in [0, 1), got {me!r}")
    # sizes that decide what is allocated: bounded so that no policy can ask for more than a few hundred MB
    _int_in(p, "bias", "mc_draws", 100, 100_000, source)
    _str_or_none(p, "bias", "attribute", source)
    tgt = p["bias"].get("target")
    if not (tgt in ("reference", "uniform") or isinstance(tgt, Mapping)):
        raise AuditError(f"{source}: bias.target must be 'reference', 'uniform' or a mapping of shares, got {tgt!r}")
    if isinstance(tgt, Mapping) and not all(_number(v) and 0 <= v <= 1 for v in tgt.values()):
        raise AuditError(f"{source}: bias.target shares must be numbers in [0, 1]")
    _int_in(p, "fidelity", "prdc_k", 1, 100, source)
    dr = p["memorization"].get("distance_ratio")
    if not _number(dr) or not 0 < dr <= 1:
        raise AuditError(f"{source}: memorization.distance_ratio must be in (0, 1], got {dr!r}")
    if not isinstance(p["memorization"].get("calibrate", True), bool):
        raise AuditError(f"{source}: memorization.calibrate must be true or false, "
                         f"got {p['memorization'].get('calibrate')!r}")
    fcr = p["memorization"].get("false_copy_rate", 0.001)
    if not _number(fcr) or not 0 < fcr <= 0.5:
        raise AuditError(f"{source}: memorization.false_copy_rate must be a share in (0, 0.5], got {fcr!r}")
    _int_in(p, "memorization", "nth_neighbour", 1, 1000, source)
    _int_in(p, "memorization", "max_shift", 0, 8, source)
    _int_in(p, "text", "samples_per_prompt", 1, 100, source)
    tme = p["text"].get("min_effect")
    if tme is not None and (not _number(tme) or not 0 <= tme <= 2):
        raise AuditError(f"{source}: text.min_effect must be a number in [0, 2], got {tme!r}")
    dom = p["text"].get("domains")
    if dom is not None and (not isinstance(dom, list) or not all(isinstance(d, str) for d in dom)):
        raise AuditError(f"{source}: text.domains must be a list of names, got {dom!r}")
    _str_or_none(p, "tabular", "group", source)
    _str_or_none(p, "tabular", "target", source)
    gates = p.get("gates") or {}
    if not isinstance(gates, Mapping):
        raise AuditError(f"{source}: gates must map a metric path to {{max: x}} or {{min: x}}")
    ranges = gate_ranges()
    for name, spec in gates.items():
        if not isinstance(name, str):
            raise AuditError(f"{source}: gate name {name!r} must be a metric path such as bias.flagged_count")
        ops = [k for k in spec if k in ("max", "min")] if isinstance(spec, Mapping) else []
        if (not isinstance(spec, Mapping) or len(ops) != 1 or set(spec) - {"max", "min", "allow_missing"}
                or not isinstance(spec.get("allow_missing", False), bool)):
            raise AuditError(f"{source}: gate {name!r} must be {{max: x}} or {{min: x}} (optionally with "
                             f"allow_missing: true), got {spec!r}")
        _check_gate_name(name, ranges, source)
        v = spec[ops[0]]
        if not _number(v):
            raise AuditError(f"{source}: gate {name!r} threshold must be a finite number, got {v!r}")
        lo, hi = ranges.get(name, (-float("inf"), float("inf")))
        if not lo <= v <= hi:
            raise AuditError(f"{source}: gate {name!r} threshold must be in [{lo:g}, {hi:g}], got {v!r}")


#: The report's sections a gate can read (report.json's top-level keys, less the bookkeeping ones).
GATE_ROOTS = ("bias", "fidelity", "memorization", "privacy", "provenance", "detection", "marking", "human")


def _check_gate_name(name: str, known: Mapping[str, Any], source: str) -> None:
    """A misspelled gate would never find its metric: refuse unknown sections and near-misses of known gates."""
    import difflib

    root = name.split(".", 1)[0]
    if root not in GATE_ROOTS:
        close = difflib.get_close_matches(root, GATE_ROOTS, n=1)
        raise AuditError(f"{source}: gate {name!r}: the report has no section {root!r}"
                         + (f" (did you mean {close[0]!r}?)" if close else f"; sections: {', '.join(GATE_ROOTS)}"))
    if name not in known:  # one or two letters off a declared gate is a typo; other report paths may be gated
        close = [k for k in known if _edits(name, k) <= 2]
        if close:
            raise AuditError(f"{source}: gate {name!r} is not a known gate; did you mean {close[0]!r}?")


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), for short gate paths."""
    if abs(len(a) - len(b)) > 2:
        return 3
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _lookup(data: Mapping[str, Any], path: str) -> tuple[Any, str | None]:
    node: Any = data
    parent: Any = None
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            parent, node = node, node[part]
        elif isinstance(node, Mapping) and "reason" in node and node.get("value") is None:
            return None, node["reason"]
        else:
            return None, f"{path} is not in the report"
    if isinstance(node, Mapping):
        if node.get("value") is None:
            return None, node.get("reason", f"{path} has no value")
        node = node["value"]
    if isinstance(node, list):  # e.g. bias.flagged: gate on its length
        return len(node), None
    if node is None and isinstance(parent, Mapping) and isinstance(parent.get("reason"), str):
        return None, parent["reason"]  # e.g. privacy.epsilon of a model trained without DP
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None, f"{path} is not a number"
    return node, None


def _ledger_failure(data: Mapping[str, Any]) -> str | None:
    """Why the report's ledger does not verify, or None (no verification in the report, or it passed)."""
    priv = data.get("privacy")
    ver = priv.get("verification") if isinstance(priv, Mapping) else None
    if not isinstance(ver, Mapping) or ver.get("consistent") is not False:
        return None
    codes = [f.get("code") for f in ver.get("findings") or [] if isinstance(f, Mapping) and f.get("severity") == "error"]
    return "the ledger does not verify (" + (", ".join(str(c) for c in codes[:4]) or "inconsistent") + ")"


def evaluate_gates(data: Mapping[str, Any], policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One ``{name, value, threshold, op, passed}`` entry per gate of the policy.

    ``passed`` is ``True``/``False``, or ``None`` for a gate not evaluated that the policy allows to be
    missing; a gate not evaluated otherwise fails. Every ``privacy.*`` gate fails when the ledger does
    not verify, whatever its value."""
    out = []
    ledger_bad = _ledger_failure(data)
    for name, spec in (policy.get("gates") or {}).items():
        op = "max" if "max" in spec else "min"
        thr = spec[op]
        value, reason = _lookup(data, name)
        entry: dict[str, Any] = {"name": name, "value": value, "threshold": thr, "op": "<=" if op == "max" else ">="}
        if name.startswith("privacy.") and ledger_bad:
            entry["passed"] = False
            entry["reason"] = ledger_bad + ": no privacy figure of it can pass"
        elif value is None:
            allowed = bool(spec.get("allow_missing")) or policy.get("on_missing") == "skip"
            entry["passed"] = None if allowed else False
            entry["evaluated"] = False
            entry["reason"] = f"not evaluated: {reason}" + ("; allowed by the policy" if allowed else
                                                             "; a gate that cannot be evaluated fails")
        else:
            entry["passed"] = bool(value <= thr if op == "max" else value >= thr)
        out.append(entry)
    return out
