"""The console's FastAPI application: session and CSRF handling, review queues, items, exports, users and studies."""
from __future__ import annotations

import csv
import io
import json
import secrets
import threading
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, literal, select, tuple_, update
from sqlalchemy.orm import Session, defer
from starlette.concurrency import run_in_threadpool

from genguard.console import accounts, auth, db as dbm
from genguard.console.accounts import create_user
from genguard.console.models import DECISIONS, ROLES, AuditEvent, Item, Queue, Stimulus, Study, Trial, User, now

HERE = Path(__file__).resolve().parent
COOKIE = "gg_session"
PAGE_SIZE = 50
MAX_BODY_BYTES = 1024 * 1024
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
SORTS = {  # name -> ORDER BY; each ends on the id (pages never overlap) in the direction an index walks
    "suspicion": (Item.suspicion.desc(), Item.id.desc()),
    "probability": (Item.synthetic_probability.desc(), Item.id.desc()),
    "name": (Item.name.asc(), Item.id.asc()),
    "oldest": (Item.id.asc(),),
}
CSP = ("default-src 'none'; img-src 'self'; media-src 'self'; script-src 'self'; connect-src 'self'; "
       "style-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


class LoginRequired(Exception):
    pass


def _has_nul(v: Any) -> bool:
    """Whether a form or JSON value carries a NUL character (refused: PostgreSQL's text cannot store one)."""
    if isinstance(v, str):
        return "\x00" in v
    if isinstance(v, (list, tuple)):
        return any(_has_nul(x) for x in v)
    if isinstance(v, dict):
        return any(_has_nul(k) or _has_nul(x) for k, x in v.items())
    return False


def _local_path(target: str) -> str:
    """``target`` when it is a path on this console, else ``/``: never an open redirect (``//host``, ``/\\host``)."""
    ok = target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target and len(target) < 2000
    return target if ok and all(c.isprintable() for c in target) else "/"


def _gates_field(v: Any) -> dict[str, Any] | None:
    """A study's gates from a form (JSON text) or a JSON body (an object)."""
    if v in (None, ""):
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            raise ValueError("gates: not JSON (give e.g. {\"human.two_afc.ci_high\": {\"min\": 0.3}})") from None
    if not isinstance(v, dict):
        raise ValueError("gates: a JSON object of metric path -> {min: x} or {max: x}")
    return v


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


def _csv_cell(v: Any) -> str:
    """A cell a spreadsheet will not run as a formula (file names and notes are attacker-controlled)."""
    s = "" if v is None else str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


class _EncodedCache:
    """Re-encoded media (``encode(path)``: PNG images, WAV clips) by (path, size, mtime): decoding and re-encoding
    is most of a media request's cost."""

    def __init__(self, encode: Callable[[str], bytes | None], max_bytes: int = 64 * 1024 * 1024) -> None:
        from collections import OrderedDict

        self.encode = encode
        self.max_bytes, self.used, self.lock = max_bytes, 0, threading.Lock()
        self.data: OrderedDict[tuple, bytes] = OrderedDict()

    def get(self, path: str) -> bytes | None:
        import os

        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (path, st.st_size, st.st_mtime_ns)
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        data = self.encode(path)
        if data is not None and len(data) <= self.max_bytes // 16:
            with self.lock:
                if key not in self.data:
                    self.data[key] = data
                    self.used += len(data)
                while self.used > self.max_bytes:
                    _, old = self.data.popitem(last=False)
                    self.used -= len(old)
        return data


def _thumb_png(path: str, size: int = 1024) -> bytes | None:
    """The image re-encoded as PNG (never the file's own bytes: nothing a browser could run leaves the server)."""
    from PIL import Image, UnidentifiedImageError

    from genguard.generators._io import MAX_PIXELS, InputError, check_pixels, check_regular_file

    try:
        check_regular_file(path, 512 * 1024 * 1024, InputError)
        with Image.open(path) as im:
            check_pixels(*im.size, path, MAX_PIXELS, InputError)
            im.draft("RGB", (size, size))
            im.load()
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except (OSError, UnidentifiedImageError, ValueError, InputError):
        return None


def _fmt_num(v: Any, spec: str = ".3f") -> str:
    import math

    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return format(v, spec) if math.isfinite(v) else str(v)
    return "—" if v is None else str(v)[:200]


def create_app(db_url: str | None = None, home: Path | None = None, *, login_limit: int = 5,
               login_window_s: float = 60.0, secure_cookie: bool = False) -> FastAPI:
    """The console app over ``db_url`` (default: SQLite in ``home``), migrated to the newest schema."""
    home = Path(home) if home else dbm.genguard_home()
    engine = dbm.make_engine(db_url or dbm.default_url(home))
    dbm.upgrade(engine)
    Sessions = dbm.session_factory(engine)
    signer = auth.Signer(auth.load_secret(home / "console-secret.key"))
    limiter = accounts.LoginLimiter(Sessions, login_limit, login_window_s)
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html (select_autoescape)
    templates.env.autoescape = True
    templates.env.filters["num"] = _fmt_num
    import_lock = threading.Lock()

    app = FastAPI(title="genguard console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.sessions, app.state.home, app.state.limiter = engine, Sessions, home, limiter
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ---- sessions: every client (logged in or not) has a random token in a signed cookie, the key of its CSRF
    # tokens; a token is a logged-in session only while the sessions table holds its hash (log-out deletes it)
    @app.middleware("http")
    async def session_mw(request: Request, call_next):
        token = signer.unsign(request.cookies.get(COOKIE))
        fresh = token is None
        if fresh:
            token = secrets.token_urlsafe(32)
        request.state.sid, request.state.uid = token, None  # uid: looked up when a route needs it
        request.state.set_session = token if fresh else None
        if any(_has_nul(k) or _has_nul(v) for k, v in request.query_params.multi_items()):
            response: Response = JSONResponse({"error": "query parameters may not contain NUL characters"}, 400)
        else:
            response = await call_next(request)
        if request.state.set_session is not None:
            response.set_cookie(COOKIE, signer.sign(request.state.set_session), httponly=True, samesite="strict",
                                secure=secure_cookie, max_age=signer.max_age_s, path="/")
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.url.path.startswith("/static"):
            response.headers["Cache-Control"] = "no-store"
        return response

    def get_db():
        with Sessions() as s:
            yield s

    def session_uid(request: Request) -> int:
        """The logged-in user's id for this request's session token, 0 when none (looked up once per request)."""
        if request.state.uid is None:
            with Sessions() as s:
                u = accounts.session_user(s, request.state.sid)
                request.state.uid = u.id if u else 0
        return request.state.uid

    async def csrf_guard(request: Request) -> None:
        """Every state-changing request carries the session's CSRF token (form field or X-CSRF-Token header)."""
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return
        # refuse before reading a body: nobody but a log-in posts without a session, and only an import is big
        if request.url.path != "/login" and not await run_in_threadpool(session_uid, request):
            raise HTTPException(403, "missing or wrong CSRF token (log in first)")
        limit = MAX_UPLOAD_BYTES if request.url.path == "/queues" else MAX_BODY_BYTES
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            raise HTTPException(400, "bad Content-Length") from None
        if length > limit or (length == 0 and request.headers.get("transfer-encoding")):
            raise HTTPException(413, f"request body over {limit:,} bytes (or without a length)")
        token = request.headers.get("x-csrf-token")
        if token is None and request.headers.get("content-type", "").split(";")[0] in (
                "application/x-www-form-urlencoded", "multipart/form-data"):
            token = (await request.form()).get("csrf")
        if not signer.check_csrf(request.state.sid, token if isinstance(token, str) else None):
            raise HTTPException(403, "missing or wrong CSRF token")

    def current_user(request: Request, db: Session = Depends(get_db)) -> User:
        if request.state.uid is None:  # not looked up yet (a GET): one query on the request's own connection
            user = accounts.session_user(db, request.state.sid)
            request.state.uid = user.id if user else 0
        else:
            user = db.get(User, request.state.uid) if request.state.uid else None
        if user is None:
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                raise LoginRequired()
            raise HTTPException(401, "log in first")
        return user

    def role(*allowed: str):
        def dep(user: User = Depends(current_user)) -> User:
            if user.role not in allowed:
                raise HTTPException(403, f"needs role {' or '.join(allowed)}")
            return user
        return dep

    admin = role("admin")
    reviewer = role("admin", "reviewer")
    anyone = role(*ROLES)

    @app.exception_handler(LoginRequired)
    async def _login_redirect(request: Request, _exc: LoginRequired):
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": nxt}), status_code=303)

    def render(request: Request, name: str, user: User | None, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.update(user=user, csrf=signer.csrf(request.state.sid), decisions=DECISIONS, roles=ROLES)
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    def refused(request: Request, exc: Exception, back: str):
        """A form that could not be carried out: 400 with the reason for the API, back to ``back`` with it shown."""
        if wants_json(request):
            return JSONResponse({"error": str(exc)}, status_code=400)
        return RedirectResponse(f"{back}?" + urlencode({"error": str(exc)}), status_code=303)

    async def form(request: Request) -> dict[str, Any]:
        """The request body (form or JSON object), parsed on the event loop; the endpoints that take it are plain
        functions, so FastAPI runs them in its thread pool and a slow hash or import never stalls other requests."""
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                raise HTTPException(400, "body is not JSON") from None
            if not isinstance(body, dict):
                raise HTTPException(400, "body must be a JSON object")
        else:
            body = dict(await request.form())
        if _has_nul(body):
            raise HTTPException(400, "text fields may not contain NUL characters")
        return body

    guarded = [Depends(csrf_guard)]

    # ---- log in / out
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/"):
        return render(request, "login.html", None, next=_local_path(next))

    @app.post("/login", dependencies=guarded)
    def login(request: Request, db: Session = Depends(get_db), f: dict = Depends(form)):
        name, password = str(f.get("username", ""))[:64], str(f.get("password", ""))[:1024]
        nxt = _local_path(str(f.get("next") or "/"))
        ip = _client_ip(request)
        _, wait = limiter.attempt(name, ip)
        if wait:
            return JSONResponse({"error": f"too many failed log-ins; try again in {wait:.0f} s"}, status_code=429,
                                headers={"Retry-After": str(int(wait) + 1)})
        user = db.scalar(select(User).where(User.name == name))
        ok = auth.verify_password(password, user.password_hash) if user else (auth.dummy_verify(password) or False)
        if not ok or user.disabled:  # a disabled account reads as a wrong password: nothing tells them apart
            if wants_json(request):
                return JSONResponse({"error": "wrong user name or password"}, status_code=401)
            return render(request, "login.html", None, status=401, next=nxt, error="wrong user name or password")
        limiter.succeeded(name, ip)
        # a new token at log-in: a token planted before log-in (fixation) is worth nothing after it
        accounts.end_session(db, request.state.sid)
        request.state.sid = request.state.set_session = accounts.start_session(db, user, signer.max_age_s)
        if wants_json(request):
            return JSONResponse({"user": user.name, "role": user.role, "csrf": signer.csrf(request.state.sid)})
        return RedirectResponse(nxt, status_code=303)

    @app.post("/logout", dependencies=guarded)
    def logout(request: Request, db: Session = Depends(get_db)):
        accounts.end_session(db, request.state.sid)  # a copy of the old cookie is refused from now on
        request.state.set_session = secrets.token_urlsafe(32)
        return RedirectResponse("/login", status_code=303)

    @app.get("/account", response_class=HTMLResponse)
    def account_page(request: Request, user: User = Depends(anyone)):
        return render(request, "account.html", user, error=request.query_params.get("error"),
                      done=request.query_params.get("done"))

    @app.post("/account/password", dependencies=guarded)
    def change_password(request: Request, user: User = Depends(anyone), db: Session = Depends(get_db),
                        f: dict = Depends(form)):
        """A new password (the current one first): every session of the account ends, this client gets a new one."""
        def refuse(msg: str, status: int):
            if wants_json(request):
                return JSONResponse({"error": msg}, status_code=status)
            return RedirectResponse("/account?" + urlencode({"error": msg}), status_code=303)

        ip = _client_ip(request)
        _, wait = limiter.attempt(user.name, ip)  # a stolen session cannot guess the password here either
        if wait:
            return refuse(f"too many failed attempts; try again in {wait:.0f} s", 429)
        if not auth.verify_password(str(f.get("current", ""))[:1024], user.password_hash):
            return refuse("the current password is wrong", 403)
        limiter.succeeded(user.name, ip)
        try:
            accounts.update_user(db, user, password=str(f.get("password", ""))[:1024])
        except ValueError as exc:
            return refuse(str(exc), 400)
        request.state.sid = request.state.set_session = accounts.start_session(db, user, signer.max_age_s)
        if wants_json(request):
            return {"user": user.name, "csrf": signer.csrf(request.state.sid)}
        return RedirectResponse("/account?done=1", status_code=303)

    @app.get("/api/me")
    def me(request: Request, user: User = Depends(anyone)):
        return {"user": user.name, "role": user.role, "csrf": signer.csrf(request.state.sid)}

    # ---- home: queues and studies
    @app.get("/", response_class=HTMLResponse)
    def home_page(request: Request, user: User = Depends(anyone), db: Session = Depends(get_db)):
        queues = []
        if user.role in ("admin", "reviewer"):
            rows = db.execute(select(Queue, func.count(Item.id), func.count(Item.decision))
                              .join(Item, Item.queue_id == Queue.id, isouter=True)
                              .group_by(Queue.id).order_by(Queue.id.desc())).all()
            queues = [{"q": q, "n": n, "decided": d} for q, n, d in rows]
        studies = db.scalars(select(Study).order_by(Study.id.desc())).all()
        skipped = {s.id: sum((json.loads(s.config).get("skipped") or {}).values()) for s in studies}
        return render(request, "home.html", user, queues=queues, studies=studies, skipped=skipped,
                      error=request.query_params.get("error"))

    @app.post("/queues", dependencies=guarded)
    def import_queue(request: Request, user: User = Depends(admin), db: Session = Depends(get_db),
                     f: dict = Depends(form)):
        from genguard.console.importer import QueueImportError, import_source

        src = str(f.get("source") or "").strip()
        upload = f.get("upload")
        if hasattr(upload, "file") and getattr(upload, "filename", ""):
            data = upload.file.read(512 * 1024 * 1024 + 1)
            up = home / "console-uploads"
            up.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = up / f"{secrets.token_hex(8)}.json"
            from genguard.generators._io import atomic_write_bytes

            atomic_write_bytes(target, data, mode=0o600)
            src = str(target)
        if not src:
            raise HTTPException(400, "give a folder or a detect/verify JSON (server path) or upload a JSON")
        forgery = str(f.get("forgery", "1")) not in ("0", "false", "")
        with import_lock:  # one examination at a time: imports are CPU-bound
            try:
                q = import_source(db, Path(src), str(f.get("name") or "") or None, user.id, home / "console-maps",
                                  forgery=forgery)
            except QueueImportError as exc:
                db.rollback()
                return refused(request, exc, "/")
        n = db.scalar(select(func.count(Item.id)).where(Item.queue_id == q.id))
        if wants_json(request):
            return {"queue": q.id, "items": n}
        return RedirectResponse(f"/queues/{q.id}", status_code=303)

    def queue_query(qid: int, user: User, status: str, verdict: str, provenance: str, decision: str,
                    assignee: str):
        stmt = select(Item.id).where(Item.queue_id == qid)
        if status == "undecided":
            stmt = stmt.where(Item.decision.is_(None))
        elif status == "decided":
            stmt = stmt.where(Item.decision.is_not(None))
        if verdict:
            stmt = stmt.where(Item.verdict == verdict)
        if provenance:
            stmt = stmt.where(Item.provenance_verdict == provenance)
        if decision:
            stmt = stmt.where(Item.decision == decision)
        if assignee == "me":
            stmt = stmt.where(Item.assignee_id == user.id)
        elif assignee == "none":
            stmt = stmt.where(Item.assignee_id.is_(None))
        return stmt

    def get_queue(db: Session, qid: int) -> Queue:
        q = db.get(Queue, qid)
        if q is None:
            raise HTTPException(404, "no such queue")
        return q

    @app.get("/queues/{qid}")
    def queue_page(request: Request, qid: int, status: str = "all", verdict: str = "", provenance: str = "",
                   decision: str = "",
                   assignee: str = "", sort: str = "suspicion", page: int = 1,
                   user: User = Depends(reviewer), db: Session = Depends(get_db)):
        q = get_queue(db, qid)
        if sort not in SORTS:
            raise HTTPException(400, f"sort: one of {', '.join(SORTS)}")
        page = max(1, min(page, 1_000_000))
        stmt = queue_query(qid, user, status, verdict, provenance, decision, assignee)
        total = db.scalar(select(func.count()).select_from(stmt.subquery()))
        # Two steps: the page's ids from the index alone (an OFFSET then skips index entries, not table rows),
        # then those rows, without the evidence JSON the list never shows.
        ids = db.scalars(stmt.order_by(*SORTS[sort]).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
        rows = {i.id: i for i in db.scalars(select(Item).options(defer(Item.evidence)).where(Item.id.in_(ids)))}
        items = [rows[i] for i in ids]
        users = {u.id: u.name for u in db.scalars(select(User))}
        params = {"status": status, "verdict": verdict, "provenance": provenance, "decision": decision,
                  "assignee": assignee, "sort": sort}
        if wants_json(request):
            return {"queue": q.id, "name": q.name, "total": total, "page": page, "page_size": PAGE_SIZE,
                    "items": [{"id": i.id, "name": i.name, "provenance_verdict": i.provenance_verdict,
                               "verdict": i.verdict, "synthetic_probability": i.synthetic_probability,
                               "decision": i.decision, "assignee": users.get(i.assignee_id)} for i in items]}
        reviewers = [u for u in db.scalars(select(User).where(User.role.in_(("admin", "reviewer"))))]
        return render(request, "queue.html", user, q=q, items=items, total=total, page=page, page_size=PAGE_SIZE,
                      users=users, params=params, sorts=list(SORTS), reviewers=reviewers,
                      qs=lambda **kw: urlencode({**params, **kw}))

    @app.post("/queues/{qid}/assign", dependencies=guarded)
    def assign(request: Request, qid: int, user: User = Depends(admin), db: Session = Depends(get_db),
               f: dict = Depends(form)):
        get_queue(db, qid)
        name = str(f.get("assignee") or "")
        target = db.scalar(select(User).where(User.name == name)) if name else None
        if name and (target is None or target.role not in ("admin", "reviewer")):
            raise HTTPException(400, f"assignee {name!r}: not a reviewer")
        ids = f.get("items")
        if isinstance(ids, str):
            ids = [x for x in ids.replace(",", " ").split() if x]
        if not isinstance(ids, list):
            raise HTTPException(400, "items: a list of item ids")
        try:
            ids = [int(x) for x in ids][:10_000]
        except (TypeError, ValueError):
            raise HTTPException(400, "items: item ids are integers") from None
        items = db.scalars(select(Item).where(Item.queue_id == qid, Item.id.in_(ids)).order_by(Item.id)
                           .with_for_update()).all()
        names = {u.id: u.name for u in db.scalars(select(User))}
        for it in items:
            new = target.id if target else None
            if it.assignee_id != new:
                db.add(AuditEvent(item_id=it.id, user_id=user.id, field="assignee", old=names.get(it.assignee_id),
                                  new=target.name if target else None))
                it.assignee_id = new
        db.commit()
        if wants_json(request):
            return {"assigned": len(items), "assignee": target.name if target else None}
        return RedirectResponse(f"/queues/{qid}", status_code=303)

    def export_rows(db: Session, qid: int) -> list[dict[str, Any]]:
        names = {u.id: u.name for u in db.scalars(select(User))}
        return [{"id": i.id, "name": i.name, "path": i.path, "provenance_verdict": i.provenance_verdict,
                 "verdict": i.verdict, "synthetic_probability": i.synthetic_probability, "decision": i.decision,
                 "note": i.note, "assignee": names.get(i.assignee_id), "decided_by": names.get(i.decided_by),
                 "decided_at": i.decided_at.isoformat() + "Z" if i.decided_at else None}
                for i in db.scalars(select(Item).options(defer(Item.evidence)).where(Item.queue_id == qid)
                                    .order_by(*SORTS["suspicion"]))]

    @app.get("/queues/{qid}/export.csv")
    def export_csv(qid: int, user: User = Depends(reviewer), db: Session = Depends(get_db)):
        q = get_queue(db, qid)
        rows = export_rows(db, qid)
        buf = io.StringIO()
        cols = ["id", "name", "path", "provenance_verdict", "verdict", "synthetic_probability", "decision", "note",
                "assignee", "decided_by", "decided_at"]
        w = csv.writer(buf)
        w.writerow(cols)
        for r in rows:
            w.writerow([_csv_cell(r[c]) for c in cols])
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="queue-{q.id}-decisions.csv"'})

    @app.get("/queues/{qid}/export.json")
    def export_json(qid: int, user: User = Depends(reviewer), db: Session = Depends(get_db)):
        q = get_queue(db, qid)
        rows = export_rows(db, qid)
        names = {u.id: u.name for u in db.scalars(select(User))}
        trail: dict[int, list[dict[str, Any]]] = {}
        for ev in db.scalars(select(AuditEvent).join(Item, Item.id == AuditEvent.item_id)
                             .where(Item.queue_id == qid).order_by(AuditEvent.id)):
            trail.setdefault(ev.item_id, []).append({"who": names.get(ev.user_id), "at": ev.at.isoformat() + "Z",
                                                     "field": ev.field, "from": ev.old, "to": ev.new})
        for r in rows:
            r["audit"] = trail.get(r["id"], [])
        return JSONResponse({"queue": {"id": q.id, "name": q.name, "source": q.source}, "items": rows},
                            headers={"Content-Disposition": f'attachment; filename="queue-{q.id}-decisions.json"'})

    # ---- items
    def get_item(db: Session, iid: int, lock: bool = False) -> Item:
        # ``lock``: SELECT ... FOR UPDATE where the database has it (PostgreSQL): of two reviewers deciding one
        # item at once the second waits for the first
        it = db.get(Item, iid, with_for_update=lock or None)
        if it is None:
            raise HTTPException(404, "no such item")
        return it

    def next_item(db: Session, it: Item) -> Item | None:
        """The next undecided item after ``it`` in most-suspicious-first order, wrapping to the first."""
        base = select(Item).where(Item.queue_id == it.queue_id, Item.decision.is_(None), Item.id != it.id)
        # a row-value comparison: SQLite walks the index from here (the equivalent OR scans the whole queue)
        after = base.where(tuple_(Item.suspicion, Item.id) < tuple_(literal(it.suspicion), literal(it.id)))
        return (db.scalars(after.order_by(*SORTS["suspicion"]).limit(1)).first()
                or db.scalars(base.order_by(*SORTS["suspicion"]).limit(1)).first())

    @app.get("/items/{iid}")
    def item_page(request: Request, iid: int, user: User = Depends(reviewer), db: Session = Depends(get_db)):
        it = get_item(db, iid)
        ev = json.loads(it.evidence)
        names = {u.id: u.name for u in db.scalars(select(User))}
        trail = db.scalars(select(AuditEvent).where(AuditEvent.item_id == iid).order_by(AuditEvent.id)).all()
        nxt = next_item(db, it)
        if wants_json(request):
            return {"id": it.id, "name": it.name, "queue": it.queue_id, "decision": it.decision, "note": it.note,
                    "evidence": ev, "next": nxt.id if nxt else None,
                    "audit": [{"who": names.get(e.user_id), "at": e.at.isoformat() + "Z", "field": e.field,
                               "from": e.old, "to": e.new} for e in trail]}
        ev = ev if isinstance(ev, dict) else {}
        return render(request, "item.html", user, it=it, ev=ev, view=item_view(ev), trail=trail,
                      names=names, nxt=nxt, has_overlay=bool(it.overlay_path))

    pngs = _EncodedCache(_thumb_png)

    def image_response(path: str | None) -> Response:
        png = pngs.get(path) if path else None
        if png is None:
            raise HTTPException(404, "no image")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/items/{iid}/image")
    def item_image(iid: int, user: User = Depends(reviewer), db: Session = Depends(get_db)):
        return image_response(get_item(db, iid).path)

    @app.get("/items/{iid}/overlay")
    def item_overlay(iid: int, user: User = Depends(reviewer), db: Session = Depends(get_db)):
        return image_response(get_item(db, iid).overlay_path)

    @app.post("/items/{iid}/decision", dependencies=guarded)
    def decide(request: Request, iid: int, user: User = Depends(reviewer), db: Session = Depends(get_db),
               f: dict = Depends(form)):
        decision = f.get("decision")
        if decision not in DECISIONS:
            raise HTTPException(400, f"decision: one of {', '.join(DECISIONS)}")
        note = f.get("note")
        note = None if note in (None, "") else str(note)[:10_000]
        for _ in range(20):
            it = get_item(db, iid, lock=True)
            if user.role != "admin" and it.assignee_id not in (None, user.id):
                raise HTTPException(403, "this item is assigned to another reviewer")
            old_decision, old_note = it.decision, it.note
            new_note = note if "note" in f else old_note
            # compare-and-set on what was read: a decision made meanwhile by another reviewer (SQLite has no row
            # lock) makes this update match no row, and the loop reads again, so every audit event's old value is
            # the decision it really replaced
            done = db.execute(update(Item).where(Item.id == iid, Item.decision.is_not_distinct_from(old_decision),
                                                 Item.note.is_not_distinct_from(old_note))
                              .values(decision=decision, note=new_note, decided_by=user.id, decided_at=now())
                              .execution_options(synchronize_session=False)).rowcount
            if done == 1:
                break
            db.rollback()
            db.expire_all()
        else:
            raise HTTPException(409, "the item kept changing while being decided; try again")
        if old_decision != decision:
            db.add(AuditEvent(item_id=iid, user_id=user.id, field="decision", old=old_decision, new=decision))
        if (old_note or None) != new_note:
            db.add(AuditEvent(item_id=iid, user_id=user.id, field="note", old=old_note, new=new_note))
        db.commit()
        db.refresh(it)
        nxt = next_item(db, it)
        if wants_json(request):
            return {"id": it.id, "decision": it.decision, "next": nxt.id if nxt else None}
        return RedirectResponse(f"/items/{nxt.id}" if nxt else f"/queues/{it.queue_id}", status_code=303)

    # ---- users
    @app.get("/admin/users", response_class=HTMLResponse)
    def users_page(request: Request, user: User = Depends(admin), db: Session = Depends(get_db)):
        return render(request, "users.html", user, users=db.scalars(select(User).order_by(User.id)).all(),
                      error=request.query_params.get("error"))

    @app.post("/admin/users", dependencies=guarded)
    def add_user(request: Request, user: User = Depends(admin), db: Session = Depends(get_db), f: dict = Depends(form)):
        try:
            u = create_user(db, str(f.get("username", "")), str(f.get("role", "")), str(f.get("password", "")))
        except ValueError as exc:
            return refused(request, exc, "/admin/users")
        if wants_json(request):
            return {"id": u.id, "user": u.name, "role": u.role}
        return RedirectResponse("/admin/users", status_code=303)

    @app.post("/admin/users/{uid}", dependencies=guarded)
    def edit_user(request: Request, uid: int, user: User = Depends(admin), db: Session = Depends(get_db),
                  f: dict = Depends(form)):
        """Change a user's role, password or disabled flag; any change ends that user's sessions."""
        target = db.get(User, uid)
        if target is None:
            raise HTTPException(404, "no such user")
        disabled = f.get("disabled")
        if disabled is not None:
            disabled = str(disabled).lower() in ("1", "true", "on", "yes")
        role_ = str(f["role"]) if f.get("role") else None
        try:
            if target.id == user.id and (disabled or (role_ not in (None, "admin"))):
                raise ValueError("an admin cannot disable or demote their own account (ask another admin)")
            accounts.update_user(db, target, role=role_, password=str(f["password"]) if f.get("password") else None,
                                 disabled=disabled)
        except ValueError as exc:
            db.rollback()
            return refused(request, exc, "/admin/users")
        if wants_json(request):
            return {"id": target.id, "user": target.name, "role": target.role, "disabled": target.disabled}
        return RedirectResponse("/admin/users", status_code=303)

    # ---- studies
    from genguard.console import studies as st

    def get_study(db: Session, sid: int) -> Study:
        s = db.get(Study, sid)
        if s is None:
            raise HTTPException(404, "no such study")
        return s

    @app.post("/studies", dependencies=guarded)
    def new_study(request: Request, user: User = Depends(admin), db: Session = Depends(get_db),
                  f: dict = Depends(form)):
        try:
            s = st.create_study(db, str(f.get("name") or "study"), str(f.get("kind") or ""),
                                Path(str(f["real"])) if f.get("real") else None, Path(str(f.get("generated") or "")),
                                user.id, home, int(f.get("trials_per_rater") or 20),
                                int(f.get("attention_checks") or 2), gates=_gates_field(f.get("gates")))
        except (st.StudyError, ValueError) as exc:
            db.rollback()
            return refused(request, exc, "/")
        if wants_json(request):
            cfg = json.loads(s.config)
            return {"study": s.id, "media": s.media, "skipped": cfg["skipped"],
                    "skipped_reasons": cfg["skipped_reasons"]}
        return RedirectResponse("/", status_code=303)

    @app.get("/studies/{sid}")
    def study_page(request: Request, sid: int, user: User = Depends(anyone), db: Session = Depends(get_db)):
        s = get_study(db, sid)
        st.ensure_trials(db, s, user)
        t = st.next_trial(db, s, user)
        done = db.scalar(select(func.count(Trial.id)).where(Trial.study_id == sid, Trial.rater_id == user.id,
                                                            Trial.answer.is_not(None)))
        total = db.scalar(select(func.count(Trial.id)).where(Trial.study_id == sid, Trial.rater_id == user.id))
        if wants_json(request):
            return {"study": s.id, "kind": s.kind, "media": s.media, "trial": t.id if t else None, "done": done,
                    "total": total}
        return render(request, "study.html", user, s=s, t=t, done=done, total=total)

    def own_trial(db: Session, sid: int, tid: int, user: User) -> Trial:
        t = db.get(Trial, tid)
        if t is None or t.study_id != sid or t.rater_id != user.id:
            raise HTTPException(404, "no such trial")
        return t

    wavs = _EncodedCache(st.clip_wav)

    def shown(db: Session, t: Trial, side: str) -> Stimulus | None:
        """The stimulus a trial shows on ``side`` (left / right), None for no such side."""
        stim_id = {"left": t.left_id, "right": t.right_id}.get(side)
        return db.get(Stimulus, stim_id) if stim_id else None

    @app.get("/studies/{sid}/trials/{tid}/{side}")
    def trial_media(sid: int, tid: int, side: str, user: User = Depends(anyone), db: Session = Depends(get_db)):
        """A trial's image (PNG) or clip (WAV), re-encoded: what a rater's browser gets is never the file itself."""
        t = own_trial(db, sid, tid, user)
        stim = shown(db, t, side)
        if get_study(db, sid).media != "audio":
            return image_response(stim.path if stim else None)
        wav = wavs.get(stim.path) if stim else None
        if wav is None:
            raise HTTPException(404, "no clip")
        st.clip_sent(db, t, side)
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/studies/{sid}/trials/{tid}", dependencies=guarded)
    def answer(request: Request, sid: int, tid: int, user: User = Depends(anyone),
                     db: Session = Depends(get_db), f: dict = Depends(form)):
        s = get_study(db, sid)
        t = own_trial(db, sid, tid, user)
        seconds = None
        if s.media == "audio":
            seconds = {}  # the lengths of the clips as served; one that cannot be served any more is not waited for
            for side in ("left", "right"):
                stim = shown(db, t, side)
                wav = wavs.get(stim.path) if stim else None
                if wav is not None:
                    seconds[side] = st.clip_seconds(wav)
        try:
            st.answer_trial(db, s, t, str(f.get("answer", "")), seconds)
        except st.StudyError as exc:
            raise HTTPException(400, str(exc)) from None
        nxt = st.next_trial(db, s, user)
        if wants_json(request):
            return {"next": nxt.id if nxt else None}
        return RedirectResponse(f"/studies/{sid}", status_code=303)

    @app.get("/studies/{sid}/results.json")
    def study_results(sid: int, max_attention_failures: int = 0, user: User = Depends(admin),
                      db: Session = Depends(get_db)):
        return st.results(db, get_study(db, sid), max_attention_failures)

    return app


def item_view(ev: dict[str, Any]) -> dict[str, Any]:
    """The evidence shown on an item page, as plain strings: every field may come from a hostile manifest, so
    types are checked here and the template only ever prints (escaped) text."""
    from genguard.review import _dict, _num, _score_of, _signer_text

    prov = _dict(ev.get("provenance"))
    man, hist, wm, claim = (_dict(prov.get(k)) for k in ("manifest", "history", "watermark", "claim"))

    def text_list(v: Any) -> str | None:
        if isinstance(v, list):
            return ", ".join(str(x)[:200] for x in v[:100]) or None
        return str(v)[:200] if v else None

    rows = [
        ("C2PA manifest", man.get("state")),
        ("codes", text_list(man.get("codes"))),
        ("title", hist.get("title") or man.get("title")),
        ("signer", _signer_text(_dict(prov.get("signer")))),
        ("actions", text_list(hist.get("actions"))),
        ("source type", text_list([str(s).rsplit("/", 1)[-1] for s in hist["source_types"]]
                                  if isinstance(hist.get("source_types"), list) else hist.get("source_types"))),
        ("generator", prov.get("generator") or claim.get("generator")),
        ("run", prov.get("run_id") or claim.get("run_id")),
        ("DP ε / δ claimed", None if claim.get("epsilon") is None
         else f"{_num(claim['epsilon'], '.4g')} / {_num(claim.get('delta'), '.4g')}"),
        ("watermark", ("found" if wm.get("found") else ("not applicable" if wm.get("applicable") is False
                                                        else "not found")) if wm else None),
        ("watermark p-value", _num(wm.get("p_value"), ".2e")),
        ("watermark payload", wm.get("payload")),
    ]
    ingredients = []
    stack = [(n, 0) for n in hist.get("ingredients") or [] if isinstance(n, dict)] if isinstance(
        hist.get("ingredients"), list) else []
    while stack and len(ingredients) < 200:
        node, depth = stack.pop(0)
        title, rel = str(node.get("title") or "?")[:200], str(node.get("relationship") or "?")[:40]
        ingredients.append("· " * depth + f"{title} ({rel}"
                           + (f"; {str(node.get('made'))[:40]}" if node.get("made") else "") + ")")
        kids = node.get("ingredients")
        if isinstance(kids, list) and depth < 8:
            stack[:0] = [(k, depth + 1) for k in kids if isinstance(k, dict)]
    forgery = sorted(((str(k)[:80], _score_of(v)) for k, v in _dict(ev.get("forgery")).items()), key=lambda kv: -kv[1])
    made = prov.get("made")
    return {"rows": [(k, str(v)[:2000]) for k, v in rows if v not in (None, "")], "ingredients": ingredients,
            "forgery": forgery, "made": str(made)[:40] if made in ("ai-generated", "ai-composited") else None,
            "reason": str(prov.get("reason") or "")[:2000] or None}
