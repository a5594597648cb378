"""A manifest's history in reviewer terms: who signed, what was done, how the content was made, what failed.

:func:`summarize` walks the active manifest and its ingredients recursively (c2pa-python's manifest
store JSON and validation results) and reduces them to a small dict; :func:`decide` turns that dict,
plus the watermark, into a verdict and a one-line reason by the ordered rule table :data:`RULES`,
which the README prints.
"""
from __future__ import annotations

from typing import Any, Callable

#: How content was made, weakest to strongest. The strongest over the ingredient tree is reported.
MADE_ORDER = ("unknown", "captured", "edited", "ai-composited", "ai-generated")
#: IPTC digital source types (the last path segment, lower case) by class.
SOURCE_CLASS = {
    "trainedalgorithmicmedia": "ai-generated",
    "trainedalgorithmicdata": "ai-generated",
    "compositewithtrainedalgorithmicmedia": "ai-composited",
    "compositesynthetic": "ai-composited",
    "algorithmicallyenhanced": "edited",
    "algorithmicmedia": "edited",
    "datadrivenmedia": "edited",
    "digitalcreation": "edited",
    "digitalart": "edited",
    "humanedits": "edited",
    "minorhumanedits": "edited",
    "composite": "edited",
    "screencapture": "captured",
    "virtualrecording": "captured",
    "digitalcapture": "captured",
    "computationalcapture": "captured",
    "compositecapture": "captured",
    "negativefilm": "captured",
    "positivefilm": "captured",
    "print": "captured",
    "empty": "unknown",
}
#: Actions that record no change to the content itself.
_NEUTRAL_ACTIONS = {"c2pa.created", "c2pa.opened", "c2pa.published", "c2pa.repackaged", "c2pa.transcoded",
                    "c2pa.converted", "c2pa.watermarked", "c2pa.watermarked.bound", "c2pa.watermarked.unbound",
                    "org.genguard.watermarked", "c2pa.unknown"}
#: Failure codes that speak of the signer's credential, not of the content's integrity.
SIGNER_TRUST_CODES = {"signingCredential.untrusted"}
SIGNER_INVALID_CODES = {"signingCredential.expired", "signingCredential.revoked", "signingCredential.invalid",
                        "signingCredential.ocsp.revoked", "signingCredential.ocsp.unknown"}
#: CAWG codes that say the identity could not be checked (trust or an offline lookup), not that it is false.
CAWG_UNVERIFIED_CODES = {"cawg.x509.credential.untrusted", "cawg.ica.untrusted_issuer", "cawg.ica.did_unavailable"}
MAX_DEPTH = 32


def source_class(dst: Any) -> str:
    """The class (``ai-generated`` ... ``unknown``) of a digitalSourceType URI or name."""
    if not isinstance(dst, str) or not dst.strip():
        return "unknown"
    return SOURCE_CLASS.get(dst.strip().rstrip("/").rsplit("/", 1)[-1].lower(), "unknown")


def _stronger(a: str, b: str) -> str:
    return a if MADE_ORDER.index(a) >= MADE_ORDER.index(b) else b


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for a in manifest.get("assertions") or []:
        if not isinstance(a, dict) or not str(a.get("label", "")).startswith("c2pa.actions"):
            continue
        data = a.get("data") if isinstance(a.get("data"), dict) else {}
        for act in data.get("actions") or []:
            if isinstance(act, dict) and isinstance(act.get("action"), str):
                out.append(act)
    return out


def _signer(manifest: dict[str, Any]) -> dict[str, Any] | None:
    si = manifest.get("signature_info")
    if not isinstance(si, dict):
        return None
    return {k: si.get(k) for k in ("common_name", "issuer", "cert_serial_number", "time", "alg") if si.get(k)}


def _generator(manifest: dict[str, Any]) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        info = info[0]
    if isinstance(info, dict) and info.get("name"):
        return f"{info['name']} {info.get('version') or ''}".strip()
    cg = manifest.get("claim_generator")
    return cg if isinstance(cg, str) else None


def _node(store: dict[str, Any], label: str | None, title: str | None, relationship: str, depth: int,
          seen: set[str]) -> dict[str, Any]:
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    m = manifests.get(label) if label else None
    node: dict[str, Any] = {"title": title, "relationship": relationship, "label": label, "has_manifest": bool(m)}
    if not isinstance(m, dict) or label in seen or depth > MAX_DEPTH:
        node["made"] = "unknown"
        return node
    seen = seen | {label}
    acts = _actions(m)
    own = "unknown"
    dsts = []
    for act in acts:
        dst = act.get("digitalSourceType")
        if isinstance(dst, str) and dst.strip():
            dsts.append(dst.strip())
            own = _stronger(own, source_class(dst))
        elif act["action"] not in _NEUTRAL_ACTIONS:
            own = _stronger(own, "edited")
    made = own
    ingredients = []
    for ing in m.get("ingredients") or []:
        if not isinstance(ing, dict):
            continue
        rel = str(ing.get("relationship") or "componentOf")
        child = _node(store, ing.get("active_manifest"), ing.get("title"), rel, depth + 1, seen)
        # what the signer recorded about the ingredient when it was added (c2pa-rs re-checks only deltas)
        vr = ing.get("validation_results") if isinstance(ing.get("validation_results"), dict) else {}
        recorded = _codes(vr.get("activeManifest"), "failure")
        recorded += [str(x.get("code")) for x in ing.get("validation_status") or [] if isinstance(x, dict)]
        child["recorded_failures"] = [c for c in dict.fromkeys(recorded)
                                      if c not in SIGNER_TRUST_CODES and not c.endswith(".success")]
        ingredients.append(child)
        c = child["made"]
        if rel == "inputTo":
            continue  # an input to a tool (a prompt image): the tool's own action says what came out
        if rel == "componentOf" and c == "ai-generated":
            c = "ai-composited"  # an AI part placed into something else
        if c in ("ai-generated", "ai-composited") or rel == "parentOf":
            made = _stronger(made, c)
    node.update({"title": title or m.get("title"), "generator": _generator(m), "signer": _signer(m),
                 "actions": [a["action"] for a in acts], "source_types": dsts, "made": made,
                 "ingredients": ingredients})
    return node


def _flatten(node: dict[str, Any]):
    yield node
    for c in node.get("ingredients") or []:
        yield from _flatten(c)


def _codes(block: Any, kind: str) -> list[str]:
    if not isinstance(block, dict):
        return []
    return [str(x.get("code")) for x in block.get(kind) or [] if isinstance(x, dict) and x.get("code")]


def summarize(store: dict[str, Any], results: dict[str, Any], trust_anchor_given: bool) -> dict[str, Any]:
    """The history dict of a manifest store (see the module docstring); ``_active`` is the raw active manifest."""
    label = store.get("active_manifest")
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    active = manifests.get(label) if isinstance(label, str) else None
    tree = _node(store, label, None, "active", 0, set())
    am = results.get("activeManifest") if isinstance(results, dict) else None
    failures = _codes(am, "failure")
    successes = _codes(am, "success")
    info = _codes(am, "informational")
    integrity = [c for c in failures if not c.startswith("cawg.")
                 and c not in SIGNER_TRUST_CODES and c not in SIGNER_INVALID_CODES]
    ingredient_failures = []
    for d in results.get("ingredientDeltas") or [] if isinstance(results, dict) else []:
        if not isinstance(d, dict):
            continue
        fails = [c for c in _codes(d.get("validationDeltas"), "failure")
                 if c not in SIGNER_TRUST_CODES and not c.startswith("cawg.")]
        if fails:
            uri = str(d.get("ingredientAssertionURI") or "")
            ingredient_failures.append({"ingredient": uri.rsplit("/", 1)[-1] or uri, "codes": fails})
    if "signingCredential.trusted" in successes:
        trust = "trusted"
    elif not trust_anchor_given:
        trust = "unverified"
    else:
        trust = "untrusted"
    cawg_labels = [a.get("label") for a in (active or {}).get("assertions") or []
                   if isinstance(a, dict) and str(a.get("label", "")).startswith("cawg.identity")]
    cawg_codes = [c for c in failures + info + successes if c.startswith("cawg.")]
    cawg_fail = [c for c in failures if c.startswith("cawg.") and c not in CAWG_UNVERIFIED_CODES]
    if not cawg_labels:
        cawg_trust = None
    elif cawg_fail:
        cawg_trust = "invalid"
    elif "cawg.ica.did_unavailable" in cawg_codes:
        cawg_trust = "not checked offline"
    elif any(c in CAWG_UNVERIFIED_CODES for c in cawg_codes):
        cawg_trust = "untrusted" if trust_anchor_given else "unverified"
    elif any(c.endswith(".trusted") or c == "cawg.ica.credential_valid" for c in cawg_codes):
        cawg_trust = "trusted"
    else:
        cawg_trust = "unverified"
    nodes = list(_flatten(tree))
    recorded = [{"ingredient": n.get("title"), "codes": n["recorded_failures"]} for n in nodes
                if n.get("recorded_failures")]
    ai_nodes = [n for n in nodes if any(source_class(d) in ("ai-generated", "ai-composited")
                                        for d in n.get("source_types") or [])]
    return {
        "_active": active,
        "made": tree["made"],
        "made_by": (ai_nodes[0].get("generator") if ai_nodes else None),
        "source_types": sorted({d for n in nodes for d in n.get("source_types") or []}),
        "actions": tree.get("actions") or [],
        "generator": tree.get("generator"),
        "signer": tree.get("signer"),
        "signer_trust": trust,
        "signer_problems": [c for c in failures if c in SIGNER_INVALID_CODES],
        # the signature's RFC 3161 time-stamp as c2pa checked it (timeStamp.validated / .trusted / .mismatch ...)
        "timestamp_codes": [c for c in dict.fromkeys(successes + info + failures) if c.startswith("timeStamp.")],
        "cawg": {"assertions": cawg_labels, "trust": cawg_trust, "codes": cawg_codes, "failures": cawg_fail}
        if cawg_labels else None,
        "integrity_failures": integrity,
        "ingredient_failures": ingredient_failures,
        # failures an ingredient already had when it was added, as the signer recorded them: disclosed
        # history, not a failure of this file (stripping a manifest would hide them just as well)
        "recorded_ingredient_failures": recorded,
        "n_manifests": len(manifests),
        "tree": tree,
    }


# ---------------------------------------------------------------------------------------------- verdict
MADE_PHRASE = {"ai-generated": "AI-generated", "ai-composited": "AI-composited", "edited": "edited",
               "captured": "captured", "unknown": "origin not stated"}


def signer_name(signer: dict[str, Any] | None) -> str:
    if not signer:
        return "an unnamed signer"
    cn, iss = signer.get("common_name"), signer.get("issuer")
    return f"{cn or '?'} (issuer {iss})" if iss and iss != cn else str(cn or iss or "?")


class Facts:
    """What the verdict rules look at for one file."""

    def __init__(self, state: str, hist: dict[str, Any] | None, codes: list[str], detail: str | None,
                 remote_url: str | None, watermark: dict[str, Any], wm_found: bytes | None,
                 declared: bytes | None, genguard_claim: bool, wm_present: bool, text: bool,
                 trust_anchor_given: bool) -> None:
        self.state, self.h, self.codes, self.detail, self.remote_url = state, hist or {}, codes, detail, remote_url
        self.wm, self.wm_found, self.declared, self.genguard = watermark, wm_found, declared, genguard_claim
        self.wm_present, self.text, self.anchor = wm_present, text, trust_anchor_given

    @property
    def has_manifest(self) -> bool:
        return self.state in ("Valid", "Trusted", "Invalid")

    def about(self) -> str:
        """'AI-generated; signed by X (trusted)' -- the disclosure and the signer, for every manifest verdict."""
        h = self.h
        made = MADE_PHRASE.get(h.get("made", "unknown"), "origin not stated")
        if h.get("made") in ("ai-generated", "ai-composited") and h.get("made_by"):
            made += f" by {h['made_by']}"
        trust = h.get("signer_trust", "unverified")
        trust_s = {"trusted": "trusted", "untrusted": "NOT under the trust anchor",
                   "unverified": "unverified: no trust anchor given"}.get(trust, trust)
        s = f"{made}; signed by {signer_name(h.get('signer'))} ({trust_s})"
        cawg = h.get("cawg")
        if cawg:
            s += f"; CAWG identity {cawg['trust']}"
        return s


def _r_remote(f: Facts):
    if f.state == "Remote":
        return "remote", f"remote manifest at {f.remote_url}, not fetched (genguard never uses the network)"


def _r_integrity(f: Facts):
    if not f.has_manifest:
        return None
    fails = (f.h.get("integrity_failures") if f.h else None) or [c for c in f.codes if c == "manifest.unreadable"]
    if not fails and f.state == "Invalid" and not _explained(f):
        # c2pa says Invalid for a reason none of the rows below covers: never let that read as intact
        fails = [c for c in f.codes if c not in SIGNER_TRUST_CODES] or ["invalid (no code given)"]
    if fails:
        reason = "manifest does not validate: " + ", ".join(dict.fromkeys(fails))
        if f.detail:
            reason += f" ({f.detail})"
        return "tampered", reason + (f"; it says: {f.about()}" if f.h else "")


def _explained(f: Facts) -> bool:
    """Whether an Invalid state is accounted for by a later row (CAWG, ingredient, signer, offline DID)."""
    h = f.h or {}
    cawg = h.get("cawg") or {}
    return bool(cawg.get("failures") or h.get("ingredient_failures") or h.get("signer_problems")
                or "cawg.ica.did_unavailable" in (cawg.get("codes") or []))


def _r_cawg(f: Facts):
    cawg = f.h.get("cawg") if f.has_manifest else None
    if cawg and cawg.get("failures"):
        return "tampered", "CAWG identity assertion fails: " + ", ".join(cawg["failures"]) + f"; {f.about()}"


def _r_ingredient(f: Facts):
    ing = f.h.get("ingredient_failures") if f.has_manifest else None
    if ing:
        parts = "; ".join(f"{i['ingredient']}: {', '.join(i['codes'])}" for i in ing[:3])
        return "tampered", f"an ingredient's manifest does not validate ({parts}); the file's own manifest does"


def _r_watermark(f: Facts):
    if not f.has_manifest:
        return None
    if f.wm_found is not None and f.declared is not None and f.wm_found != f.declared:
        return "tampered", f"watermark payload {f.wm_found.hex()} contradicts the manifest's {f.declared.hex()}"
    if f.wm_found is not None and f.declared is None and f.genguard:
        return "tampered", f"a genguard watermark ({f.wm_found.hex()}) in a file whose manifest declares none"


def _r_signer_invalid(f: Facts):
    probs = f.h.get("signer_problems") if f.has_manifest else None
    if probs:
        return "untrusted", (f"signer's certificate fails ({', '.join(probs)}): {signer_name(f.h.get('signer'))}; "
                             f"content hashes match; {f.about()}")


def _r_signer_untrusted(f: Facts):
    if f.has_manifest and f.anchor and f.h.get("signer_trust") != "trusted":
        return "untrusted", f"signer {signer_name(f.h.get('signer'))} is not under the trust anchor; {f.about()}"


def _r_intact(f: Facts):
    if not f.has_manifest:
        return None
    wm = ""
    if f.declared is not None:
        wm = "; watermark agrees" if f.wm_found == f.declared else "; its declared watermark was not read back"
    rec = f.h.get("recorded_ingredient_failures")
    hist = ""
    if rec:
        hist = "; history: ingredient " + ", ".join(f"{r['ingredient']!r} ({', '.join(r['codes'])})" for r in rec[:2]) \
            + " was already invalid when added"
    return "intact", f"manifest valid{wm}; {f.about()}{hist}"


def _r_stripped(f: Facts):
    if f.wm_found is not None:
        named = f.wm.get("names") if isinstance(f.wm, dict) else None
        if named:
            return "stripped", f"no manifest; watermark names run {named.get('run_id')!r}"
        return "stripped", f"no manifest; genguard watermark {f.wm_found.hex()} found (run not in local registry)"
    if f.wm_present and f.text:
        return "stripped", (f"no manifest; genguard text watermark detected (z={f.wm['z_score']:.1f}, "
                            f"p={f.wm['p_value']:.1e}); a text watermark carries no run id")
    if f.wm_present and isinstance(f.wm, dict) and f.wm.get("kind") == "audio zero-bit":
        return "stripped", (f"no manifest; genguard zero-bit audio mark detected (p={f.wm['p_value']:.1e}): it shows "
                            "this key marked the audio and carries no run id")
    if f.wm_present and isinstance(f.wm, dict) and f.wm.get("kind") == "zero-bit":
        return "stripped", (f"no manifest; genguard zero-bit mark for small images detected (p={f.wm['p_value']:.1e}): "
                            "it shows this key marked the image and carries no run id")
    if f.wm_present and isinstance(f.wm, dict) and (f.wm.get("content_binding") or {}).get("bound") is False:
        return "stripped", (f"no manifest; genguard watermark detected (p={f.wm['p_value']:.1e}) but not bound to "
                            "this content (possible copy attack, or a heavy crop/padding): it names no run")
    if f.wm_present:
        return "stripped", (f"no manifest; genguard watermark detected (p={f.wm['p_value']:.1e}) "
                            "but its payload is too damaged to name the run")


def _r_untagged(f: Facts):
    return "untagged", "no manifest and no watermark"


#: The verdict table: the first rule that applies decides (README, "Reading a verdict").
RULES: list[tuple[str, Callable[[Facts], tuple[str, str] | None]]] = [
    ("remote manifest, not fetched", _r_remote),
    ("active manifest's hashes or signature fail", _r_integrity),
    ("CAWG identity assertion fails", _r_cawg),
    ("an ingredient's manifest fails", _r_ingredient),
    ("watermark contradicts the manifest", _r_watermark),
    ("signing certificate expired/revoked", _r_signer_invalid),
    ("trust anchor given, signer not under it", _r_signer_untrusted),
    ("manifest valid", _r_intact),
    ("no manifest, genguard watermark found", _r_stripped),
    ("neither", _r_untagged),
]
#: Exit status contribution of each verdict (``genguard verify``: the largest over the files).
VERDICT_EXIT = {"intact": 0, "remote": 0, "stripped": 0, "untagged": 0, "untrusted": 1, "tampered": 1, "error": 2}


def decide(facts: Facts) -> tuple[str, str, str]:
    """(verdict, reason, rule) by the first rule of :data:`RULES` that applies."""
    for name, rule in RULES:
        out = rule(facts)
        if out is not None:
            return out[0], out[1], name
    return "untagged", "no manifest and no watermark", "neither"
