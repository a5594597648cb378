"""The release report's `marking` section: EU AI Act Art. 50(2) marking of the written outputs, on a random sample of them."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable

from genguard.audits.sections import Reason, missing

#: Outputs checked for the report; the rest are represented by these (the share meeting each
#: requirement is reported with a 95 % Wilson interval). `genguard marking check` checks every file.
MAX_FILES = 32
ROBUSTNESS_SAMPLE = 4


def marking_section(paths: Iterable[str | Path], *, max_files: int = MAX_FILES, sample: int = ROBUSTNESS_SAMPLE,
                    seed: int = 0, trust_anchor: str | Path | None = None, keys: Any = None) -> dict[str, Any]:
    """The ``marking`` section of report.json for the output files ``paths`` (a technical check, not legal advice)."""
    from genguard.guardrails.provenance import marking as mk

    paths = [Path(p) for p in paths if not str(p).endswith(".c2pa")]
    if not paths:
        return missing(Reason.NOT_GIVEN, "no output files were written to check", disclaimer=mk.DISCLAIMER)
    chosen = sorted(random.Random(seed).sample(range(len(paths)), min(max_files, len(paths))))
    res = mk.check_outputs([paths[i] for i in chosen], sample=sample, seed=seed, trust_anchor=trust_anchor, keys=keys)
    n = len(chosen)
    share: dict[str, Any] = {}
    for r in mk.REQUIREMENTS:
        statuses = [ln["status"] for f in res["files"] for ln in f.get("lines", []) if ln["requirement"] == r.code]
        met = sum(s == "met" for s in statuses)
        judged = sum(s in ("met",) + mk.FAILING for s in statuses)
        share[r.code] = {"name": r.name, "basis": r.basis, "met": met, "judged": judged,
                         "not_feasible": statuses.count("not-feasible"), "not_sampled": statuses.count("not-sampled"),
                         "rate": met / judged if judged else None,
                         "ci95": list(mk.wilson(met, judged)) if judged else None}
    # outputs that cannot hold genguard's watermark (a clip too short or at too low a rate, a tiny image, a
    # table), by reason: said per file, since the requirements table only counts them as not feasible
    not_marked: dict[str, list[str]] = {}
    for f in res["files"]:
        for ln in f.get("lines", []):
            if ln["requirement"] == "watermark" and ln["status"] == "not-feasible":
                not_marked.setdefault(ln["detail"], []).append(Path(f["path"]).name)
    return {
        "passed": res["passed"],
        "disclaimer": mk.DISCLAIMER,
        "sources": res["sources"],
        "n_outputs": len(paths),
        "n_checked": n,
        "selection": "all outputs" if n == len(paths) else f"{n} of {len(paths)} outputs at random (seed {seed})",
        "requirements": share,
        "by_modality": res["by_modality"],
        "robustness": res["robustness"],
        "audio_robustness": res.get("audio_robustness"),
        "missing": res["missing"],
        "not_marked": [{"reason": why, "n": len(files), "files": files} for why, files in not_marked.items()],
        "files": res["files"],
        "method": "genguard.guardrails.provenance.marking.check_outputs (C2PA read by c2pa-python offline, "
                  "watermarks with the local key, everyday-edit suite on a sample of watermarked images and clips)",
    }
