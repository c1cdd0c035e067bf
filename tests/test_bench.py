"""The ``nbce bench`` command end to end, on the smallest case."""

import json
import time

import numpy as np
import pytest

from nbce import _cpu, bench
from nbce.__main__ import main


def test_bench_writes_table_json_plot_and_page(tmp_path, capsys):
    out = tmp_path / "bench.json"
    plot = tmp_path / "throughput.png"
    page = tmp_path / "performance.md"
    args = ["bench", "--quick", "--functions", "logsumexp", "cross_entropy_with_grad", "--dtypes", "float32"]
    args += ["--repeat", "1", "--json", str(out), "--plot", str(plot), "--markdown", str(page)]

    assert main(args) == 0

    report = json.loads(out.read_text())
    records = report["records"]
    assert {(r["function"], r["n"], r["c"]) for r in records} == {
        (f, n, c) for f in ("logsumexp", "cross_entropy_with_grad") for n, c in bench.SMALL_SHAPES
    }
    for r in records:
        assert set(r["times"]) >= {"nbce", "roofline", "exps", "scipy"}
        assert all(t > 0 for t in r["times"].values())
        assert r["vs_roofline"] == r["times"]["nbce"] / r["times"]["roofline"]
        assert r["vs_exps"] == r["times"]["nbce"] / r["times"]["exps"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "| logsumexp | float32 | 32x10 |" in text and "throughput.png" in text
    assert "cross_entropy_with_grad" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(3, 70), (40, 1000)])  # serial build; threaded (PARALLEL_MIN_ELEMENTS)
def test_exp_floor_sums_the_exps_of_the_first_row_in_every_row(shape):
    data = bench.make_data(*shape, "float32")
    x = data["x"]
    head = _cpu.HEAD  # the shift is the max of the row's first HEAD elements only
    x[0, -1] = x[0, :head].max() + 5.0
    out = np.full(shape[0], np.nan)
    bench.exp_floor.build(x)(x, out)
    row = x[0].astype(np.float64)
    expected = np.exp(row - row[:head].max()).sum()
    np.testing.assert_allclose(out, np.full(shape[0], expected), rtol=1e-6)


def test_a_slow_first_call_is_not_taken_as_the_time():
    # the first call of a kernel compiles it: that must not become its time,
    # even when it is long enough to mark the case as timed once
    calls = []

    def compiles_on_first_call():
        time.sleep(0.2 if not calls else 0.0)
        calls.append(None)

    best = bench.time_interleaved({"kernel": compiles_on_first_call}, repeats=1, budget=1.0)
    assert best["kernel"] < 0.05


def test_unknown_command_fails(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_options_are_timed_against_the_plain_call():
    records = bench.run_options(shape=(8, 50), repeats=1)
    names = [r["option"] for r in records]
    assert names[0] == "plain" and {"softcap", "z_loss", "sample_weight"} <= set(names)
    assert records[0]["vs_plain"] == 1.0
    assert all(r["time"] > 0 and r["vs_plain"] == r["time"] / records[0]["time"] for r in records)
    page = bench.markdown({"machine": {}, "records": [], "options": records})
    assert "## Options" in page and "| softcap | float32 | 8x50 |" in page
