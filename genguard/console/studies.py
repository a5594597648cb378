"""Human studies in the console: stimuli from a run's samples and reference images, per-rater randomised trials with
attention checks, and the ``human`` results section (statistics in genguard.audits.human)."""
from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from genguard.console.models import Stimulus, Study, Trial, User, now

KINDS = ("2afc", "mos")
MAX_STIMULI = 5000


class StudyError(ValueError):
    """A study that cannot be made: the message names the folder and the problem."""


def _images(folder: Path) -> list[Path]:
    from genguard.review import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise StudyError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise StudyError(f"{folder}: no images")
    return files[:MAX_STIMULI]


def _attention_images(out: Path, k: int) -> list[Path]:
    """Unmistakable catch stimuli: flat grey with a black cross (no rater who looks can call it a real photo,
    nor rate it above 'bad'). Written once per study under the console home."""
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(k):
        im = Image.new("RGB", (128, 128), (128 + 10 * i % 60,) * 3)
        d = ImageDraw.Draw(im)
        d.line((0, 0, 127, 127), fill=(0, 0, 0), width=9)
        d.line((0, 127, 127, 0), fill=(0, 0, 0), width=9)
        p = out / f"attention-{i}.png"
        im.save(p)
        paths.append(p)
    return paths


def create_study(db: Session, name: str, kind: str, real: Path | None, generated: Path, user_id: int | None,
                 home: Path, trials_per_rater: int = 20, attention_checks: int = 2,
                 gates: dict[str, Any] | None = None) -> Study:
    if kind not in KINDS:
        raise StudyError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "2afc" and real is None:
        raise StudyError("a 2AFC study needs a folder of real (reference) images")
    if not 1 <= trials_per_rater <= 1000 or not 0 <= attention_checks <= 50:
        raise StudyError("trials per rater must be 1..1000 and attention checks 0..50")
    if gates:
        from genguard.audits.human import human_gates

        try:
            human_gates({"human": {}}, gates)  # the form is checked now, not when results are asked for
        except ValueError as exc:
            raise StudyError(str(exc)) from None
    gen = _images(Path(generated))
    ref = _images(Path(real)) if real is not None else []
    study = Study(name=name[:200] or "study", kind=kind, created_by=user_id,
                  config=json.dumps({"trials_per_rater": trials_per_rater, "attention_checks": attention_checks,
                                     "real": str(real) if real else None, "generated": str(generated),
                                     "gates": gates or {}}))
    db.add(study)
    db.flush()
    att = _attention_images(home / "studies" / f"study-{study.id}", max(attention_checks, 0))
    db.add_all([Stimulus(study_id=study.id, path=str(p), source="generated") for p in gen]
               + [Stimulus(study_id=study.id, path=str(p), source="real") for p in ref]
               + [Stimulus(study_id=study.id, path=str(p), source="attention") for p in att])
    db.commit()
    return study


def ensure_trials(db: Session, study: Study, rater: User) -> None:
    """Give a rater their trials on first visit, in an order drawn from the OS's randomness (not reproducible
    by a rater, so order and side cannot be learnt); attention checks at random positions."""
    dealt = select(Trial.id).where(Trial.study_id == study.id, Trial.rater_id == rater.id).limit(1)
    if db.scalar(dealt):
        return
    # two first visits at once (two tabs) must not deal two sets: a no-op write to the rater's row serialises
    # them (a row lock on PostgreSQL, the write lock on SQLite), and the second then sees the first's trials
    db.execute(update(User).where(User.id == rater.id).values(name=User.name))
    if db.scalar(dealt):
        db.commit()
        return
    cfg = json.loads(study.config)
    rng = np.random.default_rng(secrets.randbits(128))
    stims = db.scalars(select(Stimulus).where(Stimulus.study_id == study.id)).all()
    gen = [s for s in stims if s.source == "generated"]
    real = [s for s in stims if s.source == "real"]
    att = [s for s in stims if s.source == "attention"]
    n = int(cfg["trials_per_rater"])
    rows: list[tuple[int, int, int | None]] = []  # (attention, left, right)
    if study.kind == "2afc":
        n = min(n, len(gen))
        g = rng.permutation(len(gen))[:n]
        r = rng.choice(len(real), size=n, replace=len(real) < n)
        for gi, ri in zip(g, r):
            pair = [gen[gi].id, real[ri].id]
            rng.shuffle(pair)
            rows.append((0, pair[0], pair[1]))
        for a in att:
            pair = [a.id, real[int(rng.integers(len(real)))].id]
            rng.shuffle(pair)
            rows.append((1, pair[0], pair[1]))
    else:
        pool = gen + real
        n = min(n, len(pool))
        for i in rng.permutation(len(pool))[:n]:
            rows.append((0, pool[i].id, None))
        rows.extend((1, a.id, None) for a in att)
    order = rng.permutation(len(rows))
    db.add_all(Trial(study_id=study.id, rater_id=rater.id, position=int(pos), attention=rows[i][0],
                     left_id=rows[i][1], right_id=rows[i][2]) for pos, i in enumerate(order))
    db.commit()


def next_trial(db: Session, study: Study, rater: User) -> Trial | None:
    return db.scalars(select(Trial).where(Trial.study_id == study.id, Trial.rater_id == rater.id,
                                          Trial.answer.is_(None)).order_by(Trial.position).limit(1)).first()


def answer_trial(db: Session, study: Study, trial: Trial, answer: str) -> None:
    ok = {"left", "right"} if study.kind == "2afc" else {"1", "2", "3", "4", "5"}
    if answer not in ok:
        raise StudyError(f"answer {answer!r}: use one of {', '.join(sorted(ok))}")
    if trial.answer is not None:
        raise StudyError("this trial is already answered")
    trial.answer = answer
    trial.answered_at = now()
    db.commit()


def results(db: Session, study: Study, max_attention_failures: int = 0) -> dict[str, Any]:
    """The ``human`` section: the study's statistic with its interval, after excluding inattentive raters."""
    from genguard.audits import human

    stims = {s.id: s for s in db.scalars(select(Stimulus).where(Stimulus.study_id == study.id))}
    trials = db.scalars(select(Trial).where(Trial.study_id == study.id, Trial.answer.is_not(None))).all()
    names = {u.id: u.name for u in db.scalars(select(User))}

    def passed(t: Trial) -> bool:
        if study.kind == "2afc":  # the real image (not the catch image) must be chosen
            chosen = t.left_id if t.answer == "left" else t.right_id
            return stims[chosen].source != "attention"
        return int(t.answer) <= 2

    excluded = human.excluded_raters(((t.rater_id, passed(t)) for t in trials if t.attention), max_attention_failures)
    kept = [t for t in trials if not t.attention and t.rater_id not in excluded]
    section: dict[str, Any] = {"study": study.name, "kind": study.kind,
                               "raters_excluded_by_attention_checks": len(excluded),
                               "max_attention_failures": max_attention_failures}
    if study.kind == "2afc":
        def fooled(t: Trial) -> bool:
            chosen = t.left_id if t.answer == "left" else t.right_id
            return stims[chosen].source == "generated"
        section["two_afc"] = human.two_afc((names.get(t.rater_id, t.rater_id), fooled(t)) for t in kept)
    else:
        section["mos"] = human.mos((names.get(t.rater_id, t.rater_id), t.left_id, stims[t.left_id].source,
                                    float(t.answer)) for t in kept)
    out = {"human": section}
    section["gates"] = human.human_gates(out, json.loads(study.config).get("gates") or {})
    section["passed"] = all(g["passed"] for g in section["gates"])
    return out
