"""Human studies in the console: stimuli (images or WAV clips) from a run's samples and reference files, per-rater
randomised trials with attention checks, and the ``human`` results section (statistics in genguard.audits.human)."""
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
MEDIA = ("image", "audio")
MAX_STIMULI = 5000
#: Longest clip a rater is asked to judge (seconds) and largest WAV file a study reads: a listening trial lasts
#: seconds, and every clip is decoded when the study is made and again when it is played.
MAX_CLIP_SECONDS = 30.0
MAX_WAV_BYTES = 16 * 1024 * 1024
#: Rates a clip is played at: every browser's WAV decoder plays these, so a clip outside is resampled into them.
PLAY_RATES = (8_000, 48_000)
#: Rate of the catch clips (the spoken-digit and WaveNet rate).
ATTENTION_RATE = 16_000
#: An audio answer may come this much sooner than the trial's clips last, counted from when the first was sent
#: (the clock's and the player's start-up jitter); any sooner and the rater cannot have heard them through.
LISTEN_SLACK_S = 0.25
#: Catch clips last as long as the study's median clip, within these bounds (a length of their own would give
#: them away before they are heard).
ATTENTION_SECONDS = (0.4, MAX_CLIP_SECONDS)
#: How many skipped files' reasons a study keeps (the count is always kept).
MAX_SKIPPED_LISTED = 20
_WHAT = {"image": "images", "audio": "WAV files"}


class StudyError(ValueError):
    """A study that cannot be made: the message names the folder and the problem."""


def _media_files(folder: Path) -> tuple[str, list[Path]]:
    """The folder's media (``image`` or ``audio``) and its files in name order: one kind per folder, since a rater
    could tell generated from real by the kind of stimulus alone."""
    from genguard.generators.audio_data import WAV_SUFFIXES
    from genguard.review import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise StudyError(f"{folder}: not a folder")
    images, wavs = [], []
    for p in sorted(folder.rglob("*")):
        suffix = p.suffix.lower()
        if suffix in IMAGE_SUFFIXES and p.is_file():
            images.append(p)
        elif suffix in WAV_SUFFIXES and p.is_file():
            wavs.append(p)
    if images and wavs:
        raise StudyError(f"{folder}: holds both images ({len(images)}) and WAV files ({len(wavs)}); a study shows "
                         "one kind of media, so give each its own folder")
    if not images and not wavs:
        raise StudyError(f"{folder}: no images or WAV files")
    return ("audio", wavs) if wavs else ("image", images)


def decode_clip(path: str | Path) -> tuple[np.ndarray, int]:
    """A study clip as mono float samples in [-1, 1] and their rate, through the project's bounded WAV reader.

    A clip over :data:`MAX_CLIP_SECONDS` is refused, not cut: raters would otherwise judge a part of a clip
    as if it were the whole. Raises :class:`genguard.generators.GeneratorError` naming the file."""
    from genguard.generators import GeneratorError
    from genguard.generators.audio_data import read_wav

    x, rate = read_wav(path, max_seconds=MAX_CLIP_SECONDS + 0.5, max_bytes=MAX_WAV_BYTES)
    if len(x) > MAX_CLIP_SECONDS * rate:
        raise GeneratorError(f"{path}: longer than {MAX_CLIP_SECONDS:g} s (the most a study plays)")
    return x, rate


def clip_wav(path: str | Path) -> bytes | None:
    """The clip re-encoded by the project's WAV writer from its decoded samples (16-bit mono PCM at a rate in
    :data:`PLAY_RATES`): the file's own bytes, and whatever chunks a hostile file carries, never reach a browser.
    None when the file cannot be read."""
    from genguard.generators import GeneratorError
    from genguard.generators.audio_data import resample, wav_bytes

    try:
        x, rate = decode_clip(path)
        play = min(max(rate, PLAY_RATES[0]), PLAY_RATES[1])
        return wav_bytes(resample(x, rate, play), play)
    except (GeneratorError, OSError, ValueError):
        return None


def clip_seconds(wav: bytes) -> float:
    """Length in seconds of a clip as :func:`clip_wav` encoded it."""
    import io
    import wave

    with wave.open(io.BytesIO(wav), "rb") as w:
        return w.getnframes() / w.getframerate()


def _readable_clips(folder: Path, files: list[Path]) -> tuple[list[Path], list[str], list[float]]:
    """The WAVs that can be played to a rater, each decoded once now, the reasons for those skipped (an
    unreadable, too large or too long file is left out and counted, so one bad file never sinks a study) and the
    kept clips' lengths in seconds."""
    from genguard.generators import GeneratorError

    kept: list[Path] = []
    skipped: list[str] = []
    seconds: list[float] = []
    for p in files:
        if len(kept) == MAX_STIMULI:
            break
        try:
            x, rate = decode_clip(p)
            kept.append(p)
            seconds.append(len(x) / rate)
        except GeneratorError as exc:
            skipped.append(" ".join(str(exc).split()))  # one line, whatever the file's name holds
        except OSError as exc:  # unreadable after the reader's checks (permissions changed, file vanished)
            skipped.append(" ".join(f"{p}: cannot read WAV file: {exc.strerror or exc}".split()))
    if not kept:
        raise StudyError(f"{folder}: no readable WAV file ({len(skipped)} skipped; first: {skipped[0]})")
    return kept, skipped, seconds


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


def attention_clip(i: int, rate: int = ATTENTION_RATE, seconds: float = 1.6) -> np.ndarray:
    """Catch clip ``i`` of ``seconds``: rounds of a loud white-noise burst then a pure 1 kHz beep (0.4 s a round),
    cut to length. No rater who listens can call it a real recording nor rate it natural and clean; the noise
    differs from clip to clip (its seed is ``i``: a catch clip is obvious once heard, which is the point, so
    nothing rests on it being secret - only on it not being told apart before it is heard)."""
    rng = np.random.default_rng(i)
    n = int(0.15 * rate)
    beep = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / rate)
    gap = np.zeros(int(0.05 * rate))
    total = max(1, int(round(seconds * rate)))
    rounds = -(-total // (2 * n + 2 * len(gap)))
    parts = [q for _ in range(rounds) for q in (rng.uniform(-0.9, 0.9, n), gap, beep, gap)]
    return np.concatenate(parts)[:total].astype(np.float32)


def _attention_clips(out: Path, k: int, seconds: float = 1.6) -> list[Path]:
    """The catch clips of an audio study, ``seconds`` long, written once per study under the console home."""
    from genguard.generators.audio_data import write_wav

    out.mkdir(parents=True, exist_ok=True)
    return [write_wav(out / f"attention-{i}.wav", attention_clip(i, seconds=seconds), ATTENTION_RATE)
            for i in range(k)]


def create_study(db: Session, name: str, kind: str, real: Path | None, generated: Path, user_id: int | None,
                 home: Path, trials_per_rater: int = 20, attention_checks: int = 2,
                 gates: dict[str, Any] | None = None) -> Study:
    if kind not in KINDS:
        raise StudyError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "2afc" and real is None:
        raise StudyError("a 2AFC study needs a folder of real (reference) images or recordings")
    if not 1 <= trials_per_rater <= 1000 or not 0 <= attention_checks <= 50:
        raise StudyError("trials per rater must be 1..1000 and attention checks 0..50")
    if gates:
        from genguard.audits.human import human_gates

        try:
            human_gates({"human": {}}, gates)  # the form is checked now, not when results are asked for
        except ValueError as exc:
            raise StudyError(str(exc)) from None
    media, gen = _media_files(Path(generated))
    ref: list[Path] = []
    if real is not None:
        ref_media, ref = _media_files(Path(real))
        if ref_media != media:
            raise StudyError(f"{real}: holds {_WHAT[ref_media]} but {generated} holds {_WHAT[media]}; a study "
                             "shows one kind of media")
    skipped: dict[str, list[str]] = {"generated": [], "real": []}
    lengths: list[float] = []
    if media == "audio":
        gen, skipped["generated"], lengths = _readable_clips(Path(generated), gen)
        if real is not None:
            ref, skipped["real"], more = _readable_clips(Path(real), ref)
            lengths += more
    gen, ref = gen[:MAX_STIMULI], ref[:MAX_STIMULI]
    reasons = (skipped["generated"] + skipped["real"])[:MAX_SKIPPED_LISTED]
    study = Study(name=name[:200] or "study", kind=kind, media=media, created_by=user_id,
                  config=json.dumps({"trials_per_rater": trials_per_rater, "attention_checks": attention_checks,
                                     "real": str(real) if real else None, "generated": str(generated),
                                     "gates": gates or {},
                                     "skipped": {k: len(v) for k, v in skipped.items()},
                                     "skipped_reasons": reasons}))
    db.add(study)
    db.flush()
    where = home / "studies" / f"study-{study.id}"
    if media == "audio":  # as long as the study's typical clip, so that its length does not give it away
        lo, hi = ATTENTION_SECONDS
        att = _attention_clips(where, attention_checks, float(np.clip(np.median(lengths), lo, hi)))
    else:
        att = _attention_images(where, attention_checks)
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


def clip_sent(db: Session, trial: Trial, side: str) -> None:
    """Record when a trial's clip was first sent to its rater (a later fetch, a replay, changes nothing)."""
    column = f"{side}_sent_at"
    if getattr(trial, column) is None:
        setattr(trial, column, now())
        db.commit()


def check_heard(trial: Trial, seconds: dict[str, float]) -> None:
    """Refuse an audio answer given before the trial's clips could have been heard through: every clip must have
    been sent (the players load a clip only when it is played) and at least their total length must have passed
    since the first was sent. ``seconds``: each shown side's clip length. What the server can check is that the
    clips were delivered and the time to hear them passed; that they were played to the end is checked by the
    page, which enables the answers only then."""
    if not seconds:
        return
    sent = {side: getattr(trial, f"{side}_sent_at") for side in seconds}
    unplayed = [side for side, at in sent.items() if at is None]
    if unplayed:
        raise StudyError(f"play the {' and the '.join(unplayed)} clip before answering")
    need = sum(seconds.values())
    elapsed = (now() - min(sent.values())).total_seconds()
    if elapsed + LISTEN_SLACK_S < need:
        raise StudyError(f"answered {elapsed:.1f} s after the first clip was played, before the clips could be heard "
                         f"through ({need:.1f} s); listen to the end, then answer")


def answer_trial(db: Session, study: Study, trial: Trial, answer: str,
                 clip_seconds: dict[str, float] | None = None) -> None:
    """Record a rater's answer; for an audio trial ``clip_seconds`` (each shown side's clip length) must be given
    and the clips must have been heard (:func:`check_heard`)."""
    ok = {"left", "right"} if study.kind == "2afc" else {"1", "2", "3", "4", "5"}
    if answer not in ok:
        raise StudyError(f"answer {answer!r}: use one of {', '.join(sorted(ok))}")
    if trial.answer is not None:
        raise StudyError("this trial is already answered")
    if study.media == "audio":
        if clip_seconds is None:
            raise StudyError("an audio trial is answered with its clips' lengths (clip_seconds)")
        check_heard(trial, clip_seconds)
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
        if study.kind == "2afc":  # the real stimulus (not the catch image or clip) must be chosen
            chosen = t.left_id if t.answer == "left" else t.right_id
            return stims[chosen].source != "attention"
        return int(t.answer) <= 2

    excluded = human.excluded_raters(((t.rater_id, passed(t)) for t in trials if t.attention), max_attention_failures)
    kept = [t for t in trials if not t.attention and t.rater_id not in excluded]
    cfg = json.loads(study.config)
    section: dict[str, Any] = {"study": study.name, "kind": study.kind, "media": study.media,
                               "stimuli_skipped": cfg.get("skipped") or {"generated": 0, "real": 0},
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
    section["gates"] = human.human_gates(out, cfg.get("gates") or {})
    section["passed"] = all(g["passed"] for g in section["gates"])
    return out
