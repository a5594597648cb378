"""Release policy: audit settings and gate thresholds, from defaults, a dict or a YAML file; gates evaluated on a report.

A policy file looks like::

    level: 0.05                 # test level for every flag
    on_missing: skip            # a gate whose metric could not be computed: skip (passed: null) or fail
    bias:
      attribute: label
      target: reference         # reference | uniform | {"0": 0.1, ...}
      min_effect: 0.02          # share points a group must be off before it is flagged
    memorization:
      distance_ratio: 0.3       # Carlini-style ratio below which a sample is a suspected copy
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
      memorization.near_duplicate_rate: {max: 0.01}

Each gate becomes ``{name, value, threshold, op, passed}`` in ``report.gates``.
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
    "on_missing": "skip",
    "bias": {"attribute": "label", "target": "reference", "min_effect": 0.02, "mc_draws": 4000},
    "fidelity": {"prdc_k": 5},
    "memorization": {"distance_ratio": 0.3, "nth_neighbour": 20, "max_shift": 1},
    "text": {"domains": None, "samples_per_prompt": 1, "min_effect": 0.1},
    "tabular": {"group": "sex", "target": "target"},
    "gates": {
        "bias.flagged_count": {"max": 0},
        "memorization.near_duplicate_rate": {"max": 0.01},
        "memorization.exact_duplicate_count": {"max": 0},
        "fidelity.precision": {"min": 0.5},
        "privacy.epsilon": {"max": 10.0},
    },
}

_SECTIONS = ("level", "on_missing", "bias", "fidelity", "memorization", "gates", "text", "tabular")


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if k == "gates":  # a policy's gates replace the defaults entirely: it states what it requires
            out[k] = dict(v or {})
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_policy(policy: Any = None) -> dict[str, Any]:
    """Defaults merged with a dict or a YAML file; raises :class:`AuditError` naming the file on bad input."""
    if policy is None:
        return copy.deepcopy(DEFAULT_POLICY)
    source = "policy"
    if isinstance(policy, (str, os.PathLike)):
        import yaml

        path = Path(policy)
        source = str(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AuditError(f"{path}: no such policy file") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AuditError(f"{path}: unreadable policy YAML ({first})") from None
        if raw is None:
            raw = {}
        policy = raw
    if not isinstance(policy, Mapping):
        raise AuditError(f"{source}: a policy must be a mapping of settings, got {type(policy).__name__}")
    unknown = sorted(set(policy) - set(_SECTIONS))
    if unknown:
        raise AuditError(f"{source}: unknown policy keys {unknown}; known: {list(_SECTIONS)}")
    merged = _merge(DEFAULT_POLICY, policy)
    _validate(merged, source)
    return merged


def _validate(p: dict[str, Any], source: str) -> None:
    lvl = p.get("level")
    if not isinstance(lvl, (int, float)) or not 0 < lvl < 1:
        raise AuditError(f"{source}: level must be a number in (0, 1), got {lvl!r}")
    if p.get("on_missing") not in ("skip", "fail"):
        raise AuditError(f"{source}: on_missing must be 'skip' or 'fail', got {p.get('on_missing')!r}")
    me = p["bias"].get("min_effect")
    if not isinstance(me, (int, float)) or not 0 <= me < 1:
        raise AuditError(f"{source}: bias.min_effect must be a share in [0, 1), got {me!r}")
    dr = p["memorization"].get("distance_ratio")
    if not isinstance(dr, (int, float)) or not 0 < dr <= 1:
        raise AuditError(f"{source}: memorization.distance_ratio must be in (0, 1], got {dr!r}")
    gates = p.get("gates") or {}
    if not isinstance(gates, Mapping):
        raise AuditError(f"{source}: gates must map a metric path to {{max: x}} or {{min: x}}")
    for name, spec in gates.items():
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in ("max", "min"):
            raise AuditError(f"{source}: gate {name!r} must be {{max: x}} or {{min: x}}, got {spec!r}")
        v = next(iter(spec.values()))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AuditError(f"{source}: gate {name!r} threshold must be a number, got {v!r}")


def _lookup(data: Mapping[str, Any], path: str) -> tuple[Any, str | None]:
    node: Any = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
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
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None, f"{path} is not a number"
    return node, None


def evaluate_gates(data: Mapping[str, Any], policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One ``{name, value, threshold, op, passed}`` entry per gate of the policy."""
    out = []
    for name, spec in (policy.get("gates") or {}).items():
        op, thr = next(iter(spec.items()))
        value, reason = _lookup(data, name)
        entry: dict[str, Any] = {"name": name, "value": value, "threshold": thr, "op": "<=" if op == "max" else ">="}
        if value is None:
            entry["passed"] = False if policy.get("on_missing") == "fail" else None
            entry["reason"] = f"not computed: {reason}"
        else:
            entry["passed"] = bool(value <= thr if op == "max" else value >= thr)
        out.append(entry)
    return out
