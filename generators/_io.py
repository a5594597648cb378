"""Safe file input and output shared by every layer: bounded reads, depth-limited JSON, atomic writes.

This is the bottom layer, so guardrails/, audits/ and genguard/ share these
helpers; detectors/ (which imports nothing of the project) keeps a minimal
copy of the reading part in ``detectors/_io.py``.

* Reads refuse special files (FIFOs, devices, sockets) *before* opening them,
  since opening a FIFO blocks until a writer appears, and refuse files over a
  byte budget before reading them.
* JSON is checked for nesting depth before it is parsed (the C parser would
  otherwise raise RecursionError deep inside), and non-finite numbers are
  never written (``allow_nan=False``; :func:`json_safe` turns them into
  ``null`` plus a reason).
* Atomic writes only ever replace a regular file: a path that exists as a
  device, FIFO or socket (``/dev/stdout``) is written to in place, never
  renamed over; ``-`` means standard output.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Largest JSON/YAML/text input read whole (ledgers, configs, policies, manifests' sidecars).
MAX_TEXT_BYTES = 64 * 1024 * 1024
#: Deepest JSON/YAML nesting accepted; genguard's own files nest fewer than 10 levels.
MAX_DEPTH = 64
#: Largest image file read whole (bytes); the pixel budget below is the finer bound.
MAX_IMAGE_BYTES = 512 * 1024 * 1024
#: Largest decoded image (pixels) any genguard reader accepts by default: 8192 x 8192.
MAX_PIXELS = 67_108_864


def check_pixels(width: int, height: int, name: str, max_pixels: int = MAX_PIXELS,
                 error: type[Exception] | None = None) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` (a decompression bomb) or no pixels."""
    error = error or InputError
    if width <= 0 or height <= 0:
        raise error(f"{name}: empty image ({width}x{height})")
    if width * height > max_pixels:
        raise error(f"{name}: {width}x{height} = {width * height:,} pixels exceeds the {max_pixels:,}-pixel limit "
                    "(possible decompression bomb)")


class InputError(ValueError):
    """Bad input found by these helpers; callers pass their own package's error class instead."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def check_regular_file(path: str | os.PathLike, max_bytes: int | None = None,
                       error: type[Exception] = InputError, what: str = "file") -> os.stat_result:
    """``stat`` the path (following links) and refuse anything that is not a regular file within ``max_bytes``.

    ``stat`` never blocks on a FIFO (``open`` would, until a writer appears), so
    this is checked before any open.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{p}: no such {what}") from None
    except OSError as exc:  # ELOOP for a symlink loop, EACCES, ENAMETOOLONG
        raise error(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: is {_kind(st.st_mode)}, not a regular {what}; refused")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{p}: {st.st_size:,} bytes exceeds the {max_bytes:,}-byte limit for a {what}")
    return st


def read_bytes_bounded(path: str | os.PathLike, max_bytes: int = MAX_TEXT_BYTES,
                       error: type[Exception] = InputError, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before and while reading)."""
    p = Path(path)
    check_regular_file(p, max_bytes, error, what)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO after the check, open does not hang
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: is not a regular {what}; refused")
        # read the size the file has, not the limit: read(n) allocates n bytes up front (a 16 kB WAV under a
        # 64 MB limit cost 64 MB); a file that grew since the stat is read on to the limit
        want = min(st.st_size, max_bytes) + 1
        data = fh.read(want)
        if len(data) == want and want <= max_bytes:
            data += fh.read(max_bytes + 1 - want)
    if len(data) > max_bytes:
        raise error(f"{p}: exceeds the {max_bytes:,}-byte limit for a {what}")
    return data


def read_text_bounded(path: str | os.PathLike, max_bytes: int = MAX_TEXT_BYTES,
                      error: type[Exception] = InputError, what: str = "file") -> str:
    data = read_bytes_bounded(path, max_bytes, error, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NON_BRACKET = re.compile(rb"[^\[\]{}]")


def json_depth(text: str | bytes) -> int:
    """Deepest bracket nesting of a JSON document, computed without recursion (strings skipped)."""
    import numpy as np

    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    brackets = _NON_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw))
    if not brackets:
        return 0
    b = np.frombuffer(brackets, dtype=np.uint8)
    step = np.where((b == ord("[")) | (b == ord("{")), 1, -1)
    return int(np.cumsum(step).max())


def loads_json_checked(text: str | bytes, name: str, error: type[Exception] = InputError,
                       max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` after a depth check; NaN/Infinity literals are refused (they are not JSON)."""
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{name}: JSON nested {depth} levels deep exceeds the limit of {max_depth}")

    def _no_constants(tok: str) -> Any:
        raise ValueError(f"non-finite number {tok} is not valid JSON")

    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{name}: unreadable JSON ({first})") from None


def read_json_checked(path: str | os.PathLike, error: type[Exception] = InputError, what: str = "JSON file",
                      max_bytes: int = MAX_TEXT_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file read with the byte, special-file and depth checks above."""
    return loads_json_checked(read_bytes_bounded(path, max_bytes, error, what), str(path), error, max_depth)


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by ``None``; in a dict the key gets a
    sibling ``<key>_reason`` saying what the value was, so nothing is silently dropped."""
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()  # a numpy scalar
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if hasattr(v, "item") and hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0:
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                out[str(k)] = None
                out.setdefault(f"{k}_reason", f"not a finite number ({v})")
            else:
                out[str(k)] = json_safe(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return json_safe(obj.item())
        if isinstance(obj, np.ndarray):
            return json_safe(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    return obj


def jsonable(obj: Any, strict: bool = True) -> Any:
    """``obj`` as plain JSON types: dataclasses and ``to_dict()`` objects as dicts, tuples as lists, paths as
    strings, numpy scalars and arrays as numbers and lists, non-finite floats as ``None``.

    Anything else is returned as is when ``strict`` (so ``json.dumps`` still refuses what has no JSON
    form, e.g. a callable in a generator's parameters) and as ``str(obj)`` otherwise (reports).
    """
    import dataclasses
    from pathlib import PurePath

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj), strict)
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, type):
        return jsonable(obj.to_dict(), strict)
    if isinstance(obj, dict):
        return {str(k): jsonable(v, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, strict) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy scalar or array
        return jsonable(obj.tolist(), strict)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return obj if strict else str(obj)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def is_stdout(path: str | os.PathLike | None) -> bool:
    return path is not None and str(path) == "-"


def _special_target(path: Path) -> bool:
    """True when ``path`` exists and is not a regular file (a device such as /dev/stdout, a FIFO, a socket)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return False
    return not stat.S_ISREG(st.st_mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of one.

    ``mode`` (e.g. ``0o600`` for private keys) is applied to the temporary file
    before any byte is written, so the content is never readable by others.
    ``-`` writes to standard output; an existing non-regular target (``/dev/stdout``,
    a FIFO) is written in place, never renamed over; a folder is refused.
    """
    if is_stdout(path):
        sys.stdout.buffer.write(data) if hasattr(sys.stdout, "buffer") else sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
        return Path("-")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file path")
    if _special_target(path):
        if mode is not None:  # secrets go only to files whose permissions we set
            raise PermissionError(f"{path}: not a regular file; refusing to write a private key there")
        with open(path, "wb") as fh:
            fh.write(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    done = False
    try:
        # mkstemp creates 0600; ordinary outputs get the usual 0666 & ~umask, keys what they ask for
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        done = True
    finally:
        if not done:  # whatever stopped us, leave no temporary file behind
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike, obj: Any, mode: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n",
                             mode=mode)


# --------------------------------------------------------------------------------------
# output folders
# --------------------------------------------------------------------------------------
def check_output_dir(directory: str | os.PathLike, markers: tuple[str, ...], overwrite: bool,
                     error: type[Exception] = InputError) -> Path:
    """Refuse an existing output folder that already holds results (any of ``markers``) unless ``overwrite``.

    An earlier run's report, model or ledger is never replaced silently: the
    user either names a fresh folder or says ``--overwrite``.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise error(f"{d}: exists and is not a folder")
    if d.is_dir() and not overwrite:
        found = [m for m in markers if (d / m).exists()]
        if found:
            raise error(f"{d}: already holds results ({', '.join(found)}); choose another folder or pass --overwrite")
    return d


def world_accessible(path: str | os.PathLike, secret: bool = True) -> str | None:
    """A short reason when ``path`` or its folder lets others read a secret or replace the file; else None.

    ``secret`` (keys): any group/other permission bit counts; otherwise (ledgers)
    only group/other write bits do.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        return None
    if st.st_mode & (0o077 if secret else 0o022) and stat.S_ISREG(st.st_mode):
        return f"{p} has mode {stat.S_IMODE(st.st_mode):04o} (readable or writable by others)"
    try:
        dst = os.stat(p.parent)
    except OSError:
        return None
    if dst.st_mode & 0o002 and not dst.st_mode & stat.S_ISVTX:
        return f"its folder {p.parent} has mode {stat.S_IMODE(dst.st_mode):04o} (anyone can replace the file)"
    return None
