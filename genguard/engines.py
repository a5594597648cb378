"""Batch engines: run one per-file task over many files, in this process or on Ray, streaming resumable results.

The two engines share everything but the scheduling. A command defines a
:class:`BatchTask` (built once per worker: that is where a detector or a key is
loaded) whose ``__call__`` maps a batch ``{"index", "path"}`` to the same batch
plus each file's result as one JSON text. ``engine="local"`` calls that
function in this process; ``engine="ray"`` hands the very same class to Ray
Data ``map_batches`` over an actor pool, so the two paths cannot drift.

Results reach the caller one batch at a time, as they finish, and
:class:`ResultStream` appends each to a JSON Lines file at once (flushed), so a
stopped run, or a Ray worker that dies, loses nothing already finished, and a
rerun with ``resume=True`` skips the files already in the stream.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

#: ``--engine`` choices: in this process (the default), or a Ray cluster (a local one unless an address is given).
ENGINES = ("local", "ray")

#: A batch whose Ray worker process died is retried this many times on a fresh worker, then reported as not done
#: (Ray Data's default is to retry forever: a file that kills its decoder would then never let the run end).
MAX_TASK_RETRIES = 2


class EngineError(ValueError):
    """The engine cannot run as asked (Ray missing, the cluster unreachable): one line, exit 2."""


class BatchTask:
    """Per-batch work on files; subclasses load what they need once in ``__init__`` and define ``process``.

    ``__call__`` is the per-batch function both engines run. Each file's result
    leaves it as JSON text rather than as nested columns: entries differ in shape
    from file to file (an error entry lacks a result's fields), which Arrow's
    column types cannot hold, and the text is what the result file stores anyway.
    """

    #: What the task does, for the error entry of a file whose processing raised.
    name = "processing"

    def process(self, index: int, path: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_entry(self, path: str, message: str) -> dict[str, Any]:
        """The entry of a file whose processing raised (the command's own error shape)."""
        return {"path": path, "error": message}

    def describe(self, path: str, exc: Exception) -> str:
        """The one-line message of a file whose processing raised."""
        from genguard.errors import one_line

        return f"{path}: {self.name} failed: {exc.__class__.__name__}: {one_line(exc)}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from genguard.detectors._io import json_safe

        index = [int(i) for i in batch["index"]]
        paths = [str(p) for p in batch["path"]]
        out = []
        for i, p in zip(index, paths):
            try:
                entry = self.process(i, p)
            except Exception as exc:  # one file's failure is that file's error entry, never the batch's
                entry = self.error_entry(p, self.describe(p, exc))
            out.append(json.dumps(json_safe(entry), allow_nan=False))
        return {"index": np.asarray(index, dtype=np.int64), "path": np.asarray(paths, dtype=object),
                "result": np.asarray(out, dtype=object)}


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None, address: str | None = None) -> Iterator[Any]:
    """Ray, connected: the session already open in this process, the cluster at ``address``, or a local Ray
    started for the duration (no dashboard, no usage statistics) and shut down afterwards."""
    # Ray's usage statistics would report to Anyscale over the network: genguard never phones home.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
    except ImportError:
        raise EngineError("--engine ray needs Ray: pip install 'genguard[scale]'") from None
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True,
                              "log_to_driver": bool(os.environ.get("GENGUARD_DEBUG"))}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EngineError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                          f"{str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _batches(items: Sequence[tuple[int, str]], size: int) -> Iterator[dict[str, Any]]:
    import numpy as np

    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        yield {"index": np.asarray([i for i, _ in chunk], dtype=np.int64),
               "path": np.asarray([p for _, p in chunk], dtype=object)}


def run_batches(task_cls: type[BatchTask], options: dict[str, Any], items: Sequence[tuple[int, str]],
                on_result: Callable[[int, str, str], None], *, engine: str = "local", workers: int | None = None,
                address: str | None = None, batch_size: int | None = None,
                local_task: BatchTask | None = None) -> list[int]:
    """Run ``task_cls(**options)`` over ``items`` (``(index, path)`` pairs), calling ``on_result(index, path,
    json_text)`` for each file as its batch finishes (in completion order under Ray).

    Returns the indices left undone: under Ray, those of a batch whose worker died
    more than :data:`MAX_TASK_RETRIES` times; the other batches still finish. ``local_task``
    reuses a task already built in this process (the local engine builds one otherwise).
    """
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not items:
        return []
    if engine == "local":
        task = local_task if local_task is not None else task_cls(**options)
        for batch in _batches(items, batch_size or 1):  # one file a batch: each result is on disk at once
            out = task(batch)
            for i, p, r in zip(out["index"], out["path"], out["result"]):
                on_result(int(i), str(p), str(r))
        return []
    with ray_session(workers, address) as ray:
        n_cpu = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = batch_size or max(1, min(16, math.ceil(len(items) / (4 * (workers or n_cpu)))))
        missing = _ray_pass(ray, task_cls, options, items, on_result, size, workers or n_cpu)
        if missing and size > 1:
            # a lost batch takes its batch-mates with it: give each of them a worker of its own, so that in the
            # end only the files that kill their worker are left undone
            again = [it for it in items if it[0] in set(missing)]
            missing = _ray_pass(ray, task_cls, options, again, on_result, 1, workers or n_cpu)
    return missing


def _ray_pass(ray: Any, task_cls: type[BatchTask], options: dict[str, Any], items: Sequence[tuple[int, str]],
              on_result: Callable[[int, str, str], None], size: int, workers: int) -> list[int]:
    import ray.data

    n_blocks = math.ceil(len(items) / size)
    with warnings.catch_warnings():  # Ray Data's own deprecated settings, warned about on first use
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ray.data.DataContext.get_current()
    saved = ctx.max_errored_blocks, ctx.enable_progress_bars
    # a batch lost past its retries is reported as undone; the others go on (the default stops the run)
    ctx.max_errored_blocks, ctx.enable_progress_bars = -1, False
    seen: set[int] = set()
    # Ray Data logs each execution's plan (INFO) and the progress bars we turn off (WARNING) on stderr,
    # where a command's own lines go; GENGUARD_DEBUG=1 shows them
    data_log = logging.getLogger("ray.data")
    saved_level = data_log.level
    if not os.environ.get("GENGUARD_DEBUG"):
        data_log.setLevel(logging.ERROR)
    try:
        ds = ray.data.from_items([{"index": int(i), "path": str(p)} for i, p in items], override_num_blocks=n_blocks)
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for the actors' retry limits yet, only the deprecated remote args
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ds.map_batches(task_cls, fn_constructor_kwargs=options, batch_size=size,
                                compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, n_blocks))), num_cpus=1,
                                batch_format="numpy", max_restarts=-1, max_task_retries=MAX_TASK_RETRIES)
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, p, r in zip(out["index"], out["path"], out["result"]):
                seen.add(int(i))
                on_result(int(i), str(p), str(r))
    finally:
        ctx.max_errored_blocks, ctx.enable_progress_bars = saved
        data_log.setLevel(saved_level)
    return [i for i, _ in items if i not in seen]


class ResultStream:
    """Each finished entry appended at once as one JSON line, so a stopped run keeps what it finished.

    ``FILE.jsonl`` is streamed into directly. Any other ``FILE`` is streamed into
    ``FILE.partial.jsonl`` and, once every file is done, replaced by ``final(entries)``
    written as JSON to ``FILE`` (atomically) and the partial file removed; a
    ``FILE.parquet`` gets the entries as a Parquet table instead (:func:`write_parquet`).
    Parquet is written only at the end because a Parquet file is unreadable until its
    footer is written: the JSON Lines stream is what survives a crash. ``-`` or
    ``None`` streams nowhere. With ``resume``, the entries already in the stream
    are read back (:attr:`done`, by path; a line cut short by a crash is dropped) and
    new ones are appended after them.
    """

    def __init__(self, target: Path | None, resume: bool = False, what: str = "--json") -> None:
        self.target, self.fh, self.stream_path = target, None, None
        self.done: dict[str, dict[str, Any]] = {}
        if target is None or str(target) == "-":
            return
        if target.is_dir():
            import click

            raise click.BadParameter(f"{target}: is a folder; give a file path", param_hint=what)
        self.stream_path = target if target.suffix == ".jsonl" else target.with_name(target.name + ".partial.jsonl")
        self.stream_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and not self.stream_path.is_file() and self.stream_path != target and target.is_file():
            self._seed_from_finished(target)
        if resume and self.stream_path.is_file():
            self._read_back()
            self.fh = open(self.stream_path, "a", encoding="utf-8")
        else:
            self.fh = open(self.stream_path, "w", encoding="utf-8")

    def _seed_from_finished(self, target: Path) -> None:
        """An earlier run that finished left its JSON (a list, or ``{"files": [...]}``) and no stream: its entries
        start the new stream, so a rerun over a grown folder does only the new files."""
        from genguard.generators._io import read_bytes_bounded

        try:
            if target.suffix.lower() == ".parquet":
                entries = read_parquet_entries(target)
            else:
                doc = json.loads(read_bytes_bounded(target, 1 << 30, EngineError, "earlier results"))
                entries = doc.get("files") if isinstance(doc, dict) else doc
        except (ValueError, OSError, EngineError):
            return  # not results of ours: the run starts afresh and replaces it at the end
        if isinstance(entries, list):
            with open(self.stream_path, "w", encoding="utf-8") as fh:
                for e in entries:
                    if isinstance(e, dict) and isinstance(e.get("path"), str):
                        fh.write(json.dumps(e, allow_nan=False) + "\n")

    def _read_back(self) -> None:
        data = self.stream_path.read_bytes()
        good = data.rfind(b"\n") + 1  # a last line without its newline was being written when the run stopped
        for line in data[:good].decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                self.done[entry["path"]] = entry
        if good < len(data):
            with open(self.stream_path, "r+b") as fh:
                fh.truncate(good)

    def write_line(self, line: str) -> None:
        if self.fh is not None:
            self.fh.write(line + "\n")
            self.fh.flush()

    def finish(self, final: Callable[[], Any]) -> None:
        from genguard.generators._io import atomic_write_json

        self._close(sync=True)
        if self.target is None:
            return
        if str(self.target) == "-":
            atomic_write_json("-", final())
            return
        if self.stream_path == self.target:
            return
        if self.target.suffix.lower() == ".parquet":
            doc = final()
            write_parquet(self.target, doc.get("files", []) if isinstance(doc, dict) else doc)
        else:
            atomic_write_json(self.target, final())
        if self.stream_path is not None:
            self.stream_path.unlink(missing_ok=True)

    def _close(self, sync: bool = False) -> None:
        if self.fh is not None:
            if sync:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            self.fh.close()
            self.fh = None

    def abort(self) -> str | None:
        """Close without the final file; the stream's path, where the finished entries are."""
        self._close()
        return str(self.stream_path) if self.stream_path is not None else None


#: The ``result`` column of a Parquet results table: each file's whole entry as JSON text.
PARQUET_RESULT_COLUMN = "result"


def _column_type(values: list[Any]) -> str | None:
    """The one scalar type every non-null value of a field has ("bool", "int", "float", "str"), else None."""
    kinds = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            return None
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else None


def write_parquet(path: Path, entries: Sequence[dict[str, Any]]) -> Path:
    """Write result entries as a Parquet table, atomically: ``path``, every top-level field whose values are
    scalars of one type as a typed column (nulls where an entry lacks it, e.g. an error entry), and the whole
    entry as JSON text in ``result`` (so nothing nested is lost)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genguard.detectors._io import json_safe

    entries = [json_safe(e) for e in entries]
    names: list[str] = []
    for e in entries:
        for k in e:
            if k not in names and k != PARQUET_RESULT_COLUMN:
                names.append(k)
    arrow = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    columns: dict[str, Any] = {}
    for k in names:
        values = [e.get(k) for e in entries]
        kind = _column_type(values)
        if kind is not None:
            if kind == "float":
                values = [None if v is None else float(v) for v in values]
            columns[k] = pa.array(values, type=arrow[kind])
    columns[PARQUET_RESULT_COLUMN] = pa.array([json.dumps(e, allow_nan=False) for e in entries], type=pa.string())
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_parquet_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of a results table written by :func:`write_parquet` (its ``result`` column)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
        if PARQUET_RESULT_COLUMN not in meta.schema_arrow.names:
            raise EngineError(f"{path}: not a genguard results table (no {PARQUET_RESULT_COLUMN!r} column)")
        if meta.metadata.num_rows > MAX_LISTED_PATHS:
            raise EngineError(f"{path}: {meta.metadata.num_rows} rows; more than a run holds")
        texts = pq.read_table(path, columns=[PARQUET_RESULT_COLUMN]).column(0).to_pylist()
    except EngineError:
        raise
    except Exception as exc:  # pyarrow's own errors on a corrupt file
        raise EngineError(f"{path}: not a readable Parquet file ({exc.__class__.__name__})") from None
    out = []
    for t in texts:
        try:
            e = json.loads(t) if isinstance(t, str) else None
        except ValueError:
            e = None
        if isinstance(e, dict):
            out.append(e)
    return out


#: A list of paths longer than this is refused (a few hundred bytes a path: about 2 GB of strings in memory).
MAX_LISTED_PATHS = 10_000_000


def read_path_list(path: str | os.PathLike) -> list[str]:
    """The paths listed in a Parquet or CSV file (column ``path``, else the first column) or a text file (one a
    line, ``#`` comments). A listed file is not checked here: one that is missing is that file's error entry."""
    p = Path(path)
    if not p.is_file():
        raise EngineError(f"{p}: no such list of paths")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(p)
            names = meta.schema_arrow.names
            if not names:
                raise EngineError(f"{p}: the Parquet file has no columns")
            if meta.metadata.num_rows > MAX_LISTED_PATHS:
                raise EngineError(f"{p}: {meta.metadata.num_rows} rows; at most {MAX_LISTED_PATHS} paths per run")
            col = "path" if "path" in names else names[0]
            out = [str(v) for v in pq.read_table(p, columns=[col]).column(0).to_pylist() if v is not None]
        elif suffix == ".csv":
            import csv

            out = []
            with open(p, newline="", encoding="utf-8") as fh:
                rows = csv.reader(fh)
                header = next(rows, [])
                col = header.index("path") if "path" in header else 0
                if "path" not in header and header:
                    out.append(header[0])  # no header: the first row is a path
                for row in rows:
                    if len(row) > col and row[col]:
                        out.append(row[col])
                    if len(out) > MAX_LISTED_PATHS:
                        raise EngineError(f"{p}: more than {MAX_LISTED_PATHS} paths; split the list")
        else:
            out = []
            with open(p, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        out.append(line)
                    if len(out) > MAX_LISTED_PATHS:
                        raise EngineError(f"{p}: more than {MAX_LISTED_PATHS} paths; split the list")
    except EngineError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineError(f"{p}: cannot read the list of paths ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    except Exception as exc:  # pyarrow's own errors on a corrupt Parquet file
        raise EngineError(f"{p}: not a readable Parquet file ({exc.__class__.__name__})") from None
    if not out:
        raise EngineError(f"{p}: lists no paths")
    return out


def check_engine_options(engine: str, address: str | None, workers: int | None) -> None:
    """``--address`` and ``--workers`` say where Ray runs: with the in-process engine they would be ignored."""
    if engine != "ray" and (address is not None or workers is not None):
        import click

        raise click.UsageError(f"{'--address' if address is not None else '--workers'} goes with --engine ray")


def engine_options(f: Callable | None = None, *, resumable: bool = True) -> Callable:
    """``--engine``, ``--address``, ``--workers`` on a batch command, plus ``--resume`` and ``--paths-from``
    where its results stream (``resumable``)."""
    import click

    def add(f: Callable) -> Callable:
        if resumable:
            f = click.option("--paths-from", "paths_from", type=click.Path(dir_okay=False), default=None,
                             metavar="LIST",
                             help="Also process the files listed in LIST: Parquet or CSV (column 'path', else the "
                                  "first) or text (one path a line).")(f)
            f = click.option("--resume", is_flag=True,
                             help="Skip the files already in the --json stream (FILE.jsonl, FILE.partial.jsonl left "
                                  "by a stopped run, or a finished FILE) and append the rest; the earlier run must "
                                  "have used the same options.")(f)
        f = click.option("--workers", type=click.IntRange(1, 4096), default=None,
                         help="Ray workers (actors, one CPU each) [default: the cluster's CPUs].")(f)
        f = click.option("--address", default=None, metavar="ADDR",
                         help="Ray cluster to run on (e.g. ray://head:10001, or 'auto' on a cluster node) "
                              "[default: a local Ray started for this run]. The files must be readable by its "
                              "workers.")(f)
        f = click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                         help="Where the per-file work runs: in this process, or on Ray "
                              "(pip install 'genguard[scale]').")(f)
        return f

    return add(f) if f is not None else add
