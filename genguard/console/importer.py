"""Fill a review queue: from a folder (examined here, as `genguard review` does) or from a detect/verify/review JSON."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.orm import Session

from genguard.console.models import Item, Queue

#: provenance verdicts, most suspicious first (the order `genguard review` uses)
PRIORITY = {"tampered": 0, "untrusted": 1, "error": 2, "stripped": 3, "remote": 4, "untagged": 5, "intact": 6}
MAX_JSON_BYTES = 512 * 1024 * 1024


class QueueImportError(ValueError):
    """An import that cannot be read: the message names the file and the problem."""


def suspicion(prov_verdict: str, p: Any) -> float:
    """Higher = more suspicious: the provenance rank decides, the synthetic probability breaks ties."""
    rank = len(PRIORITY) - PRIORITY.get(prov_verdict, PRIORITY["untagged"])
    p = float(p) if isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) else 0.0
    return rank + min(max(p, 0.0), 1.0) * 0.999


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _item(queue_id: int, entry: dict[str, Any], base: Path | None) -> Item:
    path = str(entry.get("path") or "?")
    p = Path(path)
    if base is not None and not p.is_absolute():  # a JSON's relative paths are relative to the JSON
        p = base / p
    prov = _dict(entry.get("provenance"))
    if not prov and "manifest" in entry and "verdict" in entry and "watermark" in entry:
        prov = entry  # a `genguard verify` record: the provenance is the entry itself
        entry = {"path": path, "provenance": prov, "verdict": None, "synthetic_probability": None}
    pv = "error" if entry.get("error") else str(prov.get("verdict") or "untagged")[:32]
    prob = entry.get("synthetic_probability")
    finite = isinstance(prob, (int, float)) and not isinstance(prob, bool) and math.isfinite(prob)
    prob = float(prob) if finite else None
    overlay = entry.get("overlay")
    if isinstance(overlay, str) and base is not None and not Path(overlay).is_absolute():
        overlay = str(base / overlay)
    verdict = entry.get("verdict")
    from genguard.detectors._io import json_safe

    from genguard.console.accounts import clean_text

    # the columns take text without NUL (a JSON's "\u0000" would fail a PostgreSQL insert); the evidence JSON
    # keeps the entry as it was, NUL escaped
    return Item(queue_id=queue_id, path=clean_text(p, 100_000), name=clean_text(p.name, 255) or "?",
                overlay_path=clean_text(overlay, 100_000) if isinstance(overlay, str) else None,
                provenance_verdict=clean_text(pv, 32),
                verdict=clean_text(verdict, 32) if verdict is not None else None, synthetic_probability=prob,
                suspicion=suspicion(pv, prob), evidence=json.dumps(json_safe(entry), allow_nan=False))


def read_results_json(path: Path) -> list[dict[str, Any]]:
    """The entries of a `detect --json` list, a `verify --json` {"files": [...]}, a review.json or JSON Lines."""
    from genguard.generators._io import check_regular_file

    try:
        check_regular_file(path, MAX_JSON_BYTES, QueueImportError)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QueueImportError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    try:
        if path.suffix == ".jsonl":
            data: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise QueueImportError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(data, dict) and isinstance(data.get("files"), list):
        data = data["files"]
    if not isinstance(data, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in data):
        raise QueueImportError(f"{path}: not a detect/verify/review result (a list of entries, each with a 'path')")
    return data


def examine_folder(folder: Path, maps: Path, detector: Any = None, forgery: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """The per-file examination `genguard review` runs (detector, provenance, forgery with overlays)."""
    from genguard.commands.detect import examine_image
    from genguard.guardrails.provenance import verify_file
    from genguard.review import IMAGE_SUFFIXES, collect_files

    if detector is None:
        from genguard.detectors.models import load_default

        detector = load_default()
    files = collect_files([folder])
    out: list[dict[str, Any]] = []
    for i, f in enumerate(files):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            entry = examine_image(i, f, detector, maps if forgery else None, not forgery)
            if entry.get("error"):
                entry["provenance"] = verify_file(f)
        else:
            entry = {"path": str(f), "provenance": verify_file(f), "synthetic_probability": None,
                     "verdict": None, "forgery": None}
        from genguard.detectors._io import json_safe

        out.append(json_safe(entry))
        if progress:
            progress(i + 1, len(files))
    return out


def import_source(db: Session, source: Path, name: str | None, user_id: int | None, maps_root: Path,
                  detector: Any = None, forgery: bool = True) -> Queue:
    """A new queue from a folder or a result JSON; raises :class:`QueueImportError` naming the file on bad input."""
    source = Path(source)
    if not source.exists():
        raise QueueImportError(f"{source}: no such file or folder")
    queue = Queue(name=(name or source.name or str(source))[:200], source=str(source), created_by=user_id)
    db.add(queue)
    db.flush()
    if source.is_dir():
        entries = examine_folder(source, maps_root / f"queue-{queue.id}", detector, forgery)
        base = None
        if not entries:
            raise QueueImportError(f"{source}: no files to review")
    else:
        entries = read_results_json(source)
        base = source.resolve().parent
    db.add_all(_item(queue.id, e, base) for e in entries)
    db.commit()
    return queue
