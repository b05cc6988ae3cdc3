"""The keystroke flatness benchmark runs end to end and reports what it measured."""

from __future__ import annotations

import json

from benchmarks import keystroke_flatness


def test_flatness_benchmark_writes_its_report(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "flat.json"
    code = keystroke_flatness.main(
        [str(tiny_bundle), "--file", "model.onnx", "--runs", "30", "--warmup", "5", "--lengths", "3", "12",
         "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert code == (0 if report["update"]["flat"] else 1)
    assert report["runtime"]["backend"] == "onnxruntime" and report["config"]["runs"] == 30
    for figure in ("update", "keystroke"):
        lengths = report[figure]["lengths"]
        assert list(lengths) == ["3", "12"]
        assert all(v["runs"] == 30 and 0 < v["p50_ms"] <= v["p90_ms"] for v in lengths.values())
    assert report["keystroke"]["lengths"]["3"]["p50_ms"] >= report["update"]["lengths"]["3"]["p50_ms"]
    printed = capsys.readouterr().out
    assert "words typed" in printed and "p50 spread" in printed


def test_flatness_benchmark_refuses_bad_settings(tiny_bundle, tmp_path, capsys):
    assert keystroke_flatness.main([str(tiny_bundle), "--lengths", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "lengths must be positive word counts" in capsys.readouterr().err
