"""CLI commands for provenance: `genguard keys init`, `genguard tag` and `genguard verify`."""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import click

from genguard.engines import (BatchTask, ResultStream, check_engine_options, engine_options, read_path_list,
                              run_batches)
from genguard.guardrails.provenance import KeyStore, ProvenanceError, tag_file, verify_file
from genguard.output import HelpGroup, echo, human_to_stderr, json_option, make_console, make_table, write_json


def _claim_from_ledger(ledger: str | None, generator: str | None, run_id: str | None) -> dict:
    """The manifest claim: flags first, then the ledger's run id / generator / DP budget, then defaults."""
    claim = {"generator": generator or "unknown", "run_id": run_id or uuid.uuid4().hex[:12], "private": False,
             "epsilon": None, "delta": None, "ledger_sha256": None}
    if ledger:
        from genguard.pipeline import verified_ledger

        p = Path(ledger)
        led = verified_ledger(p)  # strict parse, signature and claim checked: only a true claim is signed
        try:
            claim["ledger_sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError as exc:
            raise ProvenanceError(f"{p}: cannot read ledger: {exc.strerror or exc}") from None
        eps, delta = led.get("epsilon"), led.get("delta")
        claim["epsilon"] = float(eps) if isinstance(eps, (int, float)) else None
        claim["delta"] = float(delta) if isinstance(delta, (int, float)) else None
        claim["private"] = bool(led.get("private", claim["epsilon"] is not None))
        if run_id is None and isinstance(led.get("run_id"), str) and led["run_id"]:
            claim["run_id"] = led["run_id"]
        if generator is None and isinstance(led.get("generator"), str) and led["generator"]:
            claim["generator"] = led["generator"]
    return claim


def _is_embeddable(path: Path) -> bool:
    from genguard.guardrails.provenance.manifest import sniff_format
    from genguard.guardrails.provenance.wavfile import is_wav

    with open(path, "rb") as fh:
        head = fh.read(16)
    return sniff_format(head) is not None or is_wav(head)


def _wm_status(path: Path, keys: KeyStore | None = None) -> str:
    from PIL import Image

    from genguard.guardrails.provenance.wavfile import is_wav

    with open(path, "rb") as fh:
        if is_wav(fh.read(16)):
            from genguard.guardrails.provenance.tagging import audio_unmarked_reason

            why = audio_unmarked_reason(path, keys, detect=True)  # a marked clip is read back: is it found?
            return "audio zero-bit mark" if why is None else f"not marked: {why}"

    from genguard.guardrails.provenance import MIN_WATERMARK_SIDE

    try:
        with Image.open(path) as im:
            side = min(im.size)
    except Exception:
        return "n/a (not an image)"
    if not _is_embeddable(path):
        return "n/a (not PNG/JPEG/WebP)"
    from genguard.guardrails.provenance.tagging import SMALL_MARK_MIN_SIDE

    if side >= MIN_WATERMARK_SIDE:
        return "embedded"
    return "zero-bit mark (presence only)" if side >= SMALL_MARK_MIN_SIDE else f"n/a (< {SMALL_MARK_MIN_SIDE} px)"


def _check_trust_anchor(path: Path) -> None:
    """A trust anchor must be a readable regular file of PEM certificates; its faults are named as its own."""
    from genguard.generators._io import read_bytes_bounded

    pem = read_bytes_bounded(path, 1024 * 1024, ProvenanceError, "trust anchor")
    try:
        from cryptography import x509

        x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ProvenanceError(f"{path}: trust anchor is not valid PEM certificates ({str(exc).splitlines()[0]})") from None


class TagTask(BatchTask):
    """`genguard tag`'s per-batch work: the signing keys loaded once per worker, :func:`tag_file` per file."""

    name = "tagging"

    def __init__(self, claim: dict, cert: str | None = None, key: str | None = None, out_dir: str | None = None,
                 watermark: bool = True, c2pa: bool = True, keys: KeyStore | None = None) -> None:
        self.claim, self.out_dir, self.watermark, self.c2pa = claim, out_dir, watermark, c2pa
        if keys is None:
            keys = KeyStore(cert_chain=cert, key=key) if cert else (None if not c2pa else KeyStore.load_or_create())
        self.keys = keys

    def process(self, index: int, path: str) -> dict:
        src = Path(path)
        dest = Path(self.out_dir) / src.name if self.out_dir else None
        written = tag_file(src, dest, claim=self.claim, keys=self.keys, watermark=self.watermark, c2pa=self.c2pa)
        row = {"file": str(src), "written": str(written),
               "watermark": "off" if not self.watermark else _wm_status(written, self.keys),
               "manifest": "no" if not self.c2pa else ("embedded" if _is_embeddable(written) else "sidecar .c2pa")}
        if row["watermark"].startswith("not marked: "):  # asked for and not given: the user must hear of it
            row["warning"] = f"{src}: not watermarked: {row['watermark'][len('not marked: '):]}"
        return row

    def describe(self, path: str, exc: Exception) -> str:
        from genguard.errors import one_line, user_error_types

        if isinstance(exc, user_error_types()):  # the reader's own one-line reason, which names the file
            return one_line(exc)
        return super().describe(path, exc)

    def error_entry(self, path: str, message: str) -> dict:
        return {"file": path, "error": message}


class VerifyTask(BatchTask):
    """`genguard verify`'s per-batch work: :func:`verify_file` on each file (it never raises for a bad file)."""

    name = "verification"

    def __init__(self, trust_anchor: str | None = None) -> None:
        self.trust_anchor = trust_anchor

    def process(self, index: int, path: str) -> dict:
        r = verify_file(path, trust_anchor=self.trust_anchor)
        # the detector's internals (underscored) stay out of the results
        return {**r, "watermark": {k: v for k, v in r["watermark"].items() if not k.startswith("_")}}

    def error_entry(self, path: str, message: str) -> dict:
        return {"path": path, "manifest": {"state": "Missing", "codes": []}, "generator": None, "run_id": None,
                "claim": None, "made": None, "signer": None, "history": None,
                "watermark": {"applicable": False, "reason": "not checked"}, "verdict": "error", "reason": message}


def register(group: click.Group) -> None:
    """Add `keys`, `tag` and `verify` to the genguard command group."""

    @group.group("keys", cls=HelpGroup)
    def keys_group() -> None:
        """Manage C2PA signing keys (a local root CA and a leaf signing certificate)."""

    @keys_group.command("init")
    @click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
                  help="Key directory [default: $GENGUARD_HOME/keys or ~/.genguard/keys].")
    @click.option("--force", is_flag=True, help="Replace existing keys (content tagged with the old ones no longer "
                                                "verifies as signed by you).")
    def keys_init(directory: str | None, force: bool) -> None:
        """Create a local root CA, a signing certificate and a watermark key (private keys mode 0600)."""
        from genguard.guardrails.provenance.keys import WATERMARK_KEY, default_key_dir

        d = Path(directory) if directory else default_key_dir()
        KeyStore.create(d, overwrite=force)
        click.echo(f"created keys in {d}\n  trust anchor (give it to verifiers): {d / 'root_ca.pem'}\n"
                   f"  back up the private keys (*.key, {WATERMARK_KEY}): without them your watermarks cannot be "
                   "detected nor new files signed under this root")

    @group.command("tag")
    # dir_okay is not refused by click: a folder among the files (a glob's x.wav/) is one bad entry, named beside
    # the others, not a usage error that stops every file
    @click.argument("files", nargs=-1, required=True, type=click.Path())
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
                  help="Write tagged copies here [default: tag the files in place].")
    @click.option("--no-watermark", is_flag=True, help="Do not embed an invisible watermark (image or WAV audio).")
    @click.option("--no-c2pa", is_flag=True, help="Do not attach a C2PA manifest.")
    @click.option("--cert", type=click.Path(dir_okay=False, exists=False), default=None,
                  help="Your PEM certificate chain, leaf first.")
    @click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=False), default=None,
                  help="The PEM private key of the leaf certificate.")
    @click.option("--generator", default=None, help="Generator name for the manifest [default: the ledger's, else 'unknown'].")
    @click.option("--run-id", default=None, help="Run identifier [default: the ledger's, else random].")
    @click.option("--ledger", type=click.Path(dir_okay=False), default=None,
                  help="Privacy ledger JSON of the run: its epsilon/delta and SHA-256 go into the manifest.")
    @json_option("Write what was tagged (file, written, watermark, manifest, run id) as JSON to FILE "
                 "('-': standard output).")
    @engine_options(resumable=False)
    def tag(files, out_dir, no_watermark, no_c2pa, cert, key_file, generator, run_id, ledger, json_out,
            engine, address, workers) -> int:
        """Attach provenance: watermark images and WAV audio and embed a signed C2PA manifest, or write a .c2pa sidecar.

        Exit 2 if any file could not be tagged (each is named on a line of its own; the others are still tagged)."""
        check_engine_options(engine, address, workers)

        if bool(cert) != bool(key_file):
            raise click.UsageError("--cert and --key go together")
        if no_watermark and no_c2pa:
            raise click.UsageError("--no-watermark and --no-c2pa together leave nothing to do")
        keys = KeyStore(cert_chain=cert, key=key_file) if cert else (None if no_c2pa else KeyStore.load_or_create())
        claim = _claim_from_ledger(ledger, generator, run_id)
        from genguard.errors import one_line
        from genguard.generators._io import check_regular_file

        seen: dict[str, str] = {}
        bad: dict[int, str] = {}  # a missing, special or folder entry: named at the end, the others still tagged
        for i, f in enumerate(files):
            try:
                check_regular_file(f, None, ProvenanceError, "file")  # stat only: a FIFO is not opened
            except ProvenanceError as exc:
                bad[i] = one_line(exc)
                continue
            # two inputs of the same name would overwrite each other in --out: refused before anything is written
            if out_dir:
                name = Path(f).name
                if name in seen and Path(seen[name]).resolve() != Path(f).resolve():
                    raise ProvenanceError(f"{f}: same name as {seen[name]}; both would be written to "
                                          f"{Path(out_dir) / name} (tag them into different --out folders)")
                seen[name] = f
        options = {"claim": claim, "cert": cert, "key": key_file, "out_dir": out_dir,
                   "watermark": not no_watermark, "c2pa": not no_c2pa}
        by_index: dict[int, dict] = {i: {"file": files[i], "error": msg} for i, msg in bad.items()}
        from genguard.detectors._io import progress_bar

        todo = [(i, f) for i, f in enumerate(files) if i not in bad]
        with progress_bar("tagging", total=len(todo), enabled=len(todo) >= 20) as advance:
            def on_result(i: int, path: str, line: str) -> None:
                import json

                by_index[i] = json.loads(line)  # a file that could not be tagged is an error row; the rest go on
                advance(1)

            missing = run_batches(TagTask, options, todo, on_result, engine=engine,
                                  workers=workers, address=address, local_task=TagTask(keys=keys, **options))
        for i in missing:
            by_index[i] = {"file": files[i], "error": f"{files[i]}: not tagged: its Ray worker died on it"}
        rows = [by_index[i] for i in range(len(files))]
        done = [row for row in rows if not row.get("error")]
        if done:
            table = make_table("file", "written", "watermark", "manifest")
            for row in done:
                table.add_row(row["file"], row["written"], row["watermark"], row["manifest"])
            make_console(stderr=human_to_stderr(json_out)).print(table)
        for row in done:
            if row.get("warning"):
                click.echo(f"genguard: warning: {row['warning']}", err=True)
        echo(json_out)(f"run id: {claim['run_id']}")
        write_json(json_out, {"run_id": claim["run_id"], "claim": claim, "files": rows})
        failed = [row["error"] for row in rows if row.get("error")]
        for msg in failed:  # one line each, after the table; exit 2 as for any bad input
            click.echo(f"genguard: error: {' '.join(str(msg).split())}", err=True)
        return 2 if failed else 0

    @group.command("verify")
    @click.argument("files", nargs=-1, type=click.Path())
    @json_option("Write the results as JSON to FILE (JSON Lines as it goes for FILE.jsonl, a Parquet table, one "
                 "row per file, for FILE.parquet; '-': standard output, the table then goes to stderr).")
    @click.option("--trust-anchor", type=click.Path(dir_okay=False), default=None,
                  help="PEM root certificate(s) to trust: a manifest signed under it is `Trusted`.")
    @engine_options
    def verify(files, json_out, trust_anchor, engine, address, workers, resume, paths_from) -> int:
        """Check each file's C2PA manifest (offline) and watermark: intact, untrusted, tampered, remote, stripped
        or untagged, with how the content was made and who signed, per its manifest's history.

        FILES are files or folders (searched recursively; a .c2pa sidecar is read with its asset).
        Exit 1 if any file is tampered or untrusted, 2 if any file could not be read (the others are still
        reported and the JSON is written)."""
        from genguard.review import collect_files

        if resume and (json_out is None or str(json_out) == "-"):
            raise click.UsageError("--resume needs --json FILE (the results of the earlier run)")
        check_engine_options(engine, address, workers)
        if not files and not paths_from:
            raise click.UsageError("give files or folders, or --paths-from LIST")
        if trust_anchor is not None:
            _check_trust_anchor(Path(trust_anchor))
        folders = [f for f in files if Path(f).is_dir()]
        if folders:  # a named folder with nothing in it stays an entry of its own, reported unreadable, not dropped
            files = tuple(str(p) for f in files for p in (collect_files([Path(f)]) or [Path(f)]))
        if paths_from:  # a listed file that is missing gets verdict error of its own
            files = tuple(files) + tuple(read_path_list(paths_from))
        if not files:
            raise ProvenanceError(f"{', '.join(folders)}: no files to verify")
        given = set(files)
        # a sidecar listed next to its own asset (e.g. from a glob) is read with the asset, not on its own
        stems = {str(Path(f).with_suffix("")) for f in files if not f.endswith(".c2pa")}
        todo = [f for f in files if not (f.endswith(".c2pa") and (f[: -len(".c2pa")] in given
                                                                   or f[: -len(".c2pa")] in stems))]
        stream = ResultStream(Path(json_out) if json_out else None, resume=resume)
        by_index: dict[int, dict] = {i: stream.done[f] for i, f in enumerate(todo) if f in stream.done}
        if resume and by_index:
            echo(json_out)(f"resuming: {len(by_index)} of {len(todo)} file(s) already done in {stream.stream_path}")
        from genguard.detectors._io import progress_bar

        try:
            with progress_bar("verifying", total=len(todo), enabled=len(todo) >= 20) as advance:
                advance(len(by_index))

                def on_result(i: int, path: str, line: str) -> None:
                    import json

                    by_index[i] = json.loads(line)
                    stream.write_line(line)
                    advance(1)

                missing = run_batches(VerifyTask, {"trust_anchor": trust_anchor},
                                      [(i, f) for i, f in enumerate(todo) if i not in by_index], on_result,
                                      engine=engine, workers=workers, address=address)
        except KeyboardInterrupt:
            kept = stream.abort()
            click.echo(f"genguard: interrupted after {len(by_index)} of {len(todo)} file(s)"
                       + (f"; their results are in {kept} (rerun with --resume to finish)" if kept else ""), err=True)
            raise click.exceptions.Exit(130) from None
        if missing:
            from genguard.commands.detect import _not_done

            _not_done([todo[i] for i in missing], stream, "verified")
        results = [by_index[i] for i in range(len(todo))]
        colours = {"intact": "green", "tampered": "bold red", "untrusted": "bold red", "stripped": "yellow",
                   "remote": "yellow", "untagged": "dim", "error": "red"}
        made_colours = {"ai-generated": "bold magenta", "ai-composited": "magenta"}
        table = make_table("file", "manifest", "made (per manifest)", "signer", "watermark", "run", "verdict", "reason")
        for r in results:
            wm = r["watermark"]
            wm_s = ("n/a" if not wm.get("applicable", True) else
                    (f"found p={wm['p_value']:.1e}" if wm.get("found") else "none"))
            v = r["verdict"]
            made = r.get("made") or "-"
            sg = r.get("signer") or {}
            signer_s = f"{sg.get('common_name') or sg.get('issuer') or '?'} ({sg.get('trust')})" if sg else "-"
            table.add_row(r["path"], r["manifest"]["state"],
                          f"[{made_colours[made]}]{made}[/]" if made in made_colours else made, signer_s, wm_s,
                          str(r["run_id"] or "-"), f"[{colours.get(v, 'red')}]{v}[/]", r["reason"])
        # `--json -`: the JSON alone on stdout, the table on stderr; piped, no cell is cut
        make_console(stderr=human_to_stderr(json_out)).print(table)
        stream.finish(lambda: {"files": results})
        errors = [r for r in results if r["verdict"] == "error"]
        for r in errors:
            click.echo(f"genguard: error: {r['reason']}", err=True)
        from genguard.guardrails.provenance.history import VERDICT_EXIT

        return max((VERDICT_EXIT.get(r["verdict"], 2) for r in results), default=0)
