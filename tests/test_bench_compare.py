"""test_bench_compare.py - smoke test of bench/compare.py (the side-by-side benchmark).

Runs it at a tiny N with btree_store alone (and py-lmdb too when it imports) and checks that
its JSON report has every workload for every engine, each with a positive figure or a note
saying why it is n/a. No timing assertion: speed is shown by the benchmark, never tested.

Layer: tests only; runs the benchmark script in a child interpreter.
"""
import json
import os
import subprocess
import sys

from _util import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "compare.py")


def have_lmdb():
    try:
        import lmdb  # noqa: F401
    except ImportError:
        return False
    return True


def test_compare_reports_every_workload(tmp_path):
    engines = ["btree_store"] + (["lmdb"] if have_lmdb() else [])
    out = tmp_path / "report.json"
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run([sys.executable, SCRIPT, "--n", "300", "--reps", "1",
                        "--commit-rounds", "2",
                        "--engines", *engines, "--json", str(out), "--dir", str(work)],
                       env=child_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(out.read_text())
    names = [w["name"] for w in report["workloads"]]
    expected = {"fill_seq", "fill_random", "read_random", "scan", "delete_random",
                "commit_small", "commit_batch", "reopen_gets", "bytes_per_record",
                "put_many", "get_many"}
    assert set(names) == expected
    assert report["n"] == 300
    assert sorted(report["results"]) == sorted(engines)
    for engine in engines:
        res = report["results"][engine]
        assert set(res) == expected, engine
        for w in names:
            r = res[w]
            if r["median"] is None:
                # only a missing batch call may be n/a, and it must say why
                assert w in ("put_many", "get_many"), (engine, w, r)
                assert r.get("note"), (engine, w, r)
            else:
                rounds = 2 if w.startswith("commit_") else 1
                assert r["median"] > 0 and len(r["runs"]) == rounds, (engine, w, r)
        # bytes per record: the file holds at least the payload of every record
        assert res["bytes_per_record"]["median"] >= 116, engine
    # the table names every workload, and every run's folder was removed
    for w in names:
        assert w in p.stdout
    assert os.listdir(work) == []
