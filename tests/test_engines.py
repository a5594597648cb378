"""Batch engines: the in-process path and Ray give the same results, stream them, resume, and survive lost workers."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genguard.cli import main
from genguard.engines import MAX_TASK_RETRIES, BatchTask, ResultStream, run_batches

ray = pytest.importorskip("ray")


def run(argv, capsys):
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def _photo(seed, size=96):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(size // 8, size // 8, 3))
    img = np.kron(base, np.ones((8, 8, 1))) + 0.15 * rng.normal(size=(size, size, 3))
    return (255 * (img - img.min()) / (np.ptp(img) + 1e-9)).astype(np.uint8)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the whole module (2 CPUs, no dashboard): starting it costs seconds."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    # test-only task classes below are shipped to the workers by value (this module is not importable there)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from genguard.guardrails.provenance import KeyStore

    KeyStore.load_or_create()  # before any result: with a local key, provenance also checks the watermark
    d = tmp_path_factory.mktemp("imgs")
    for i in range(4):
        Image.fromarray(_photo(i)).save(d / f"{i:02d}.png")
    Image.fromarray(_photo(9)).save(d / "poison.jpg", quality=90)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)  # unreadable: an error entry, not a crash
    return d


@pytest.fixture(scope="module")
def local_results(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "r.json"
    try:
        main(["detect", str(folder), "--json", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return json.loads(out.read_text())


def test_detect_ray_equals_in_process(ray_session, folder, local_results, tmp_path, capsys):
    js = tmp_path / "r.json"
    code, out, err = run(["detect", folder, "--engine", "ray", "--workers", "2", "--json", js], capsys)
    assert code == 0, err
    got = json.loads(js.read_text())
    assert got == local_results  # same entries, same order, forgery scores included
    assert len(got) == 6 and sum(1 for e in got if e.get("error")) == 1
    assert any(e["forgery"] for e in got if not e.get("error"))
    assert not (tmp_path / "r.json.partial.jsonl").exists()


def test_verify_ray_equals_in_process(ray_session, folder, tmp_path, capsys):
    tagged = tmp_path / "tagged"
    files = sorted(folder.glob("0[0-2].png"))
    code, _, err = run(["tag", *files, "--out", tagged, "--generator", "g"], capsys)
    assert code == 0, err
    (tagged / "plain.png").write_bytes((folder / "03.png").read_bytes())  # untagged
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    code_a, _, err_a = run(["verify", tagged, "--json", a], capsys)
    code_b, _, err_b = run(["verify", tagged, "--engine", "ray", "--json", b], capsys)
    assert code_a == code_b == 0, (err_a, err_b)
    local = json.loads(a.read_text())["files"]
    streamed = sorted((json.loads(l) for l in b.read_text().splitlines()), key=lambda r: r["path"])
    assert streamed == sorted(local, key=lambda r: r["path"])
    assert [r["verdict"] for r in local].count("intact") == 3 and any(r["verdict"] == "untagged" for r in local)
    # tag on Ray: the same claim, watermark and manifest as tagging in process (verified the same way)
    code, _, err = run(["tag", *files, "--out", tmp_path / "tagged_ray", "--generator", "g", "--run-id", "r1",
                        "--engine", "ray", "--workers", "2", "--json", tmp_path / "t.json"], capsys)
    assert code == 0, err
    assert [r["file"] for r in json.loads((tmp_path / "t.json").read_text())["files"]] == [str(f) for f in files]
    code, _, err = run(["verify", tmp_path / "tagged_ray", "--json", tmp_path / "c.json"], capsys)
    ray_tagged = json.loads((tmp_path / "c.json").read_text())["files"]
    key = lambda r: (Path(r["path"]).name, r["verdict"], r["generator"], r["made"], r["watermark"].get("found"))
    assert [key(r) for r in ray_tagged] == [key(r) for r in local if "plain" not in r["path"]]
    assert {r["run_id"] for r in ray_tagged} == {"r1"}


class Light(BatchTask):
    """A detect-shaped task that imports no torch: Ray's actor (re)starts stay cheap in the fault tests."""

    name = "detection"

    def __init__(self, **options):
        self.options = options

    def process(self, index, path):
        return {"path": path, "synthetic_probability": round(len(path) / 1000, 6), "verdict": "authentic",
                "provenance": None, "forgery": None, "index_seen": index}


class RaiseOnPoison(Light):
    def process(self, index, path):
        if "poison" in Path(path).name:
            raise RuntimeError("decoder blew up")
        return super().process(index, path)


class DieOnPoison(Light):
    """Its worker process dies (as on a segfault or the OOM killer) on one file."""

    def process(self, index, path):
        if "poison" in Path(path).name:
            os._exit(1)
        return super().process(index, path)


def test_a_file_that_raises_is_its_own_error_under_ray(ray_session, folder):
    paths = sorted(str(p) for p in folder.iterdir())
    items = list(enumerate(paths))
    got = {}
    missing = run_batches(RaiseOnPoison, {}, items, lambda i, p, r: got.__setitem__(i, json.loads(r)),
                          engine="ray", workers=1, batch_size=3)
    assert missing == [] and sorted(got) == list(range(len(items)))
    for i, p in items:
        if "poison" in p:
            assert got[i] == {"path": p, "error": f"{p}: detection failed: RuntimeError: decoder blew up"}
        else:
            assert got[i] == Light().process(i, p)  # the batch-mates of the failing file are untouched


def test_dead_worker_loses_no_finished_result_and_resume_finishes(ray_session, folder, local_results, tmp_path,
                                                                 capsys, monkeypatch):
    import genguard.commands.detect as detect_mod

    js = tmp_path / "r.json"
    partial = tmp_path / "r.json.partial.jsonl"
    with monkeypatch.context() as m:
        m.setattr(detect_mod, "DetectTask", DieOnPoison)
        code, out, err = run(["detect", folder, "--engine", "ray", "--workers", "2", "--json", js], capsys)
    assert code == 2, err
    assert "1 file(s) not examined" in err and "poison.jpg" in err and f"died {MAX_TASK_RETRIES + 1} times" in err
    assert "--resume" in err and not js.exists()
    rows = {r["path"]: r for r in map(json.loads, partial.read_text().splitlines())}
    expected = {e["path"]: e for e in local_results}
    poison = next(p for p in expected if "poison" in p)
    assert set(rows) == set(expected) - {poison}  # every other file's result was kept
    assert all(rows[p]["index_seen"] == list(expected).index(p) for p in rows)
    # the rerun (the real detector now) does only the lost file and gives the full result
    code, out, err = run(["detect", folder, "--engine", "ray", "--workers", "1", "--resume", "--json", js], capsys)
    assert code == 0, err
    assert "resuming: 5 of 6" in out
    final = json.loads(js.read_text())
    assert [e["path"] for e in final] == list(expected) and not partial.exists()
    assert final[list(expected).index(poison)] == expected[poison]
    assert all(final[i] == rows[p] for i, p in enumerate(expected) if p != poison)  # kept, not recomputed


def test_resume_skips_finished_files_and_drops_a_cut_line(folder, local_results, tmp_path, capsys):
    js = tmp_path / "r.jsonl"
    first = dict(local_results[0], synthetic_probability=0.123456)  # a marker: kept only if the file is skipped
    js.write_text(json.dumps(first) + "\n" + json.dumps(local_results[1]) + "\n" + '{"path": "cut sh')
    code, out, err = run(["detect", folder, "--resume", "--json", js], capsys)
    assert code == 0, err
    rows = [json.loads(l) for l in js.read_text().splitlines()]
    assert [r["path"] for r in rows[:2]] == [local_results[0]["path"], local_results[1]["path"]]
    assert rows[0]["synthetic_probability"] == 0.123456  # not recomputed
    assert sorted(r["path"] for r in rows) == sorted(e["path"] for e in local_results)  # each once, none lost
    assert rows[2:] == local_results[2:]


def test_resume_needs_a_result_file_and_ray_flags_need_ray(folder, capsys):
    code, out, err = run(["detect", folder, "--resume"], capsys)
    assert code == 2 and "--resume needs --json FILE" in err
    code, out, err = run(["verify", folder, "--workers", "2"], capsys)
    assert code == 2 and "--workers goes with --engine ray" in err


def test_result_stream_without_resume_starts_afresh(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"path": "old"}\n')
    s = ResultStream(p)
    assert s.done == {}
    s.write_line('{"path": "new"}')
    s.finish(lambda: None)
    assert p.read_text() == '{"path": "new"}\n'


def test_ray_missing_or_unreachable_is_one_line_exit_2(folder, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, out, err = run(["detect", folder / "00.png", "--engine", "ray"], capsys)
    assert code == 2 and "pip install 'genguard[scale]'" in err and "Traceback" not in err


def test_paths_from_csv_parquet_and_text_lists(folder, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = [str(folder / "00.png"), str(folder / "01.png")]
    gone = str(tmp_path / "gone.png")
    (tmp_path / "l.csv").write_text("id,path\n1," + good[0] + "\n2," + gone + "\n3," + good[1] + "\n")
    pq.write_table(pa.table({"path": good + [gone]}), tmp_path / "l.parquet")
    (tmp_path / "l.txt").write_text("# listed\n" + "\n".join(good + [gone]) + "\n")
    for lst, order in (("l.csv", [good[0], gone, good[1]]), ("l.parquet", good + [gone]), ("l.txt", good + [gone])):
        js = tmp_path / f"{lst}.json"
        code, out, err = run(["detect", "--paths-from", tmp_path / lst, "--no-forgery", "--json", js], capsys)
        assert code == 0, err
        rows = json.loads(js.read_text())
        assert [r["path"] for r in rows] == order  # a missing listed file is its own entry, not the batch's end
        assert [bool(r.get("error")) for r in rows] == [p == gone for p in order]
    code, out, err = run(["verify", "--paths-from", tmp_path / "l.txt", "--json", tmp_path / "v.json"], capsys)
    assert code == 2 and "gone.png" in err  # the missing file is reported, the others still verified
    assert [r["verdict"] for r in json.loads((tmp_path / "v.json").read_text())["files"]] == ["untagged"] * 2 + ["error"]


def test_a_bad_list_of_paths_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "empty.csv").write_text("")
    for name in ("bad.parquet", "empty.csv", "missing.txt"):
        code, out, err = run(["detect", "--paths-from", tmp_path / name], capsys)
        assert code == 2 and name in err and "Traceback" not in err, err
        assert len([l for l in err.splitlines() if l.startswith("genguard: error")]) == 1, err
    code, out, err = run(["detect"], capsys)
    assert code == 2 and "--paths-from" in err


def test_resume_after_a_finished_run_keeps_its_json_list(folder, tmp_path, capsys):
    files = [folder / "00.png", folder / "01.png"]
    js = tmp_path / "r.json"
    assert run(["detect", files[0], "--no-forgery", "--json", js], capsys)[0] == 0
    (first,) = json.loads(js.read_text())
    js.write_text(json.dumps([dict(first, synthetic_probability=0.654321)]))  # a marker: kept only if skipped
    code, out, err = run(["detect", *files, "--no-forgery", "--resume", "--json", js], capsys)
    assert code == 0, err
    rows = json.loads(js.read_text())
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert rows[0]["synthetic_probability"] == 0.654321 and rows[1]["synthetic_probability"] is not None
    assert not (tmp_path / "r.json.partial.jsonl").exists()


def test_parquet_results_hold_every_entry_and_resume_from_a_finished_table(folder, tmp_path, capsys):
    import pyarrow.parquet as pq

    files = [folder / "00.png", folder / "broken.png"]
    pqf, js = tmp_path / "r.parquet", tmp_path / "r.json"
    assert run(["detect", *files, "--no-forgery", "--json", pqf], capsys)[0] == 0
    assert run(["detect", *files, "--no-forgery", "--json", js], capsys)[0] == 0
    table = pq.read_table(pqf)
    assert table.column("path").to_pylist() == [str(f) for f in files]
    # typed columns for the scalar fields, nulls where an entry lacks one (the error entry has no verdict)
    assert table.schema.field("synthetic_probability").type == "double"
    assert table.column("verdict").to_pylist()[1] is None and table.column("error").to_pylist()[0] is None
    # nothing is lost: the whole entry of each file is in `result`, equal to the JSON list's
    assert [json.loads(t) for t in table.column("result").to_pylist()] == json.loads(js.read_text())
    assert not (tmp_path / "r.parquet.partial.jsonl").exists()
    # resume from the finished table: the first file is not redone (its marked entry is kept), the new one is
    entries = [json.loads(t) for t in table.column("result").to_pylist()]
    entries[0]["synthetic_probability"] = 0.654321
    from genguard.engines import write_parquet

    write_parquet(pqf, entries)
    code, out, err = run(["detect", *files, folder / "01.png", "--no-forgery", "--resume", "--json", pqf], capsys)
    assert code == 0, err
    rows = [json.loads(t) for t in pq.read_table(pqf).column("result").to_pylist()]
    assert [r["path"] for r in rows] == [str(f) for f in files] + [str(folder / "01.png")]
    assert rows[0]["synthetic_probability"] == 0.654321 and rows[2]["synthetic_probability"] is not None


def test_a_corrupt_parquet_target_is_replaced_not_trusted_on_resume(folder, tmp_path, capsys):
    import pyarrow.parquet as pq

    pqf = tmp_path / "r.parquet"
    pqf.write_bytes(b"PAR1 not a table")
    code, out, err = run(["detect", folder / "00.png", "--no-forgery", "--resume", "--json", pqf], capsys)
    assert code == 0, err
    assert pq.read_table(pqf).column("path").to_pylist() == [str(folder / "00.png")]


@pytest.fixture(scope="module")
def digit_samples(tmp_path_factory):
    """40 digit images named as `genguard sample` names them (label in the name), at 32x32 like the run's PNGs."""
    from genguard.generators.data import digits_split

    _, holdout = digits_split()
    d = tmp_path_factory.mktemp("samples")
    for i in range(40):
        img = (255 * holdout.x[i]).astype(np.uint8)
        Image.fromarray(np.kron(img, np.ones((4, 4), np.uint8))).save(d / f"s{i:03d}_label{int(holdout.groups['label'][i])}.png")
    return d


def test_audit_reads_samples_the_same_on_ray(ray_session, digit_samples, tmp_path, capsys):
    from genguard.commands.audit import read_samples

    local, files = read_samples(digit_samples, (8, 8))
    remote, files_r = read_samples(digit_samples, (8, 8), engine="ray", workers=2)
    assert files == files_r and local.dtype == remote.dtype == np.float32
    assert np.array_equal(local, remote)  # bit for bit: float32 survives the JSON trip
    reports = []
    for extra in ([], ["--engine", "ray", "--workers", "2"]):
        out = tmp_path / ("ray" if extra else "local")
        code, _, err = run(["audit", "--samples", digit_samples, "--out", out, *extra], capsys)
        assert code in (0, 1), err
        reports.append(json.loads((out / "report.json").read_text()))
    for key in ("fidelity", "bias", "memorization", "gates"):
        assert reports[0][key] == reports[1][key], key


def test_audit_on_ray_names_an_unreadable_sample(ray_session, digit_samples, tmp_path, capsys):
    import shutil

    d = tmp_path / "s"
    shutil.copytree(digit_samples, d)
    (d / "s999_label3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    code, out, err = run(["audit", "--samples", d, "--out", tmp_path / "o", "--engine", "ray", "--workers", "2"], capsys)
    assert code == 2 and "s999_label3.png" in err and "not a readable image" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run(["audit", "--samples", d, "--out", tmp_path / "o2", "--workers", "2"], capsys)
    assert code == 2 and "--engine ray" in err
