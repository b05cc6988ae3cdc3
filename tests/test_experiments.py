"""The experiments table: which runs become rows, how decodings are named, what the table shows."""

from __future__ import annotations

import json

import pytest

from benchmarks import experiments
from training.errors import UserError

QUALITY = {"n": 10, "rouge1": 0.11, "rouge2": 0.02, "rougeL": 0.1, "top1": 0.2, "top3": 0.3,
           "keystroke_savings": 0.25, "perplexity": 120.0}  # fmt: skip


def report(**fields):
    return {"split": "test", "model": {"file": "model.int8.onnx"}, **QUALITY, **fields}


def test_decodings_are_named_from_the_report():
    assert experiments.decoding_name(report(beam_width=1, mbr=None)) == "greedy"
    assert experiments.decoding_name(report(beam_width=8, mbr=None)) == "beam 8"
    mbr = {"samples": 32, "temperature": 0.7, "bigram_weight": 1.0, "seed": 0}
    assert experiments.decoding_name(report(beam_width=1, mbr=mbr)) == "MBR 32 samples, T 0.7, bigram weight 1.0"


def test_the_shipped_bundle_gives_a_row_per_test_report_greedy_first(tmp_path):
    (tmp_path / "eval-beam8-int8-onnx.json").write_text(json.dumps(report(beam_width=8)))
    (tmp_path / "eval-int8-onnx.json").write_text(json.dumps(report(beam_width=1)))
    (tmp_path / "eval-int8-onnx-val.json").write_text(json.dumps(report(split="val")))  # not test: left out
    (tmp_path / "eval-int8-tflite.json").write_text(json.dumps(report(model={"file": "model.int8.tflite"})))
    rows = experiments.shipped_rows(tmp_path, "configs/x.json")
    assert [r.name for r in rows] == ["shipped, greedy", "shipped, beam 8"]


def test_a_bundle_without_a_test_report_is_refused(tmp_path):
    with pytest.raises(UserError, match="no test-split report of model.int8.onnx"):
        experiments.shipped_rows(tmp_path, "configs/x.json")


def test_configs_without_a_trained_run_are_left_out(tmp_path, caplog):
    config = tmp_path / "untrained.json"
    config.write_text(json.dumps({"out_dir": str(tmp_path / "run")}))
    assert experiments.config_rows([config], data="unused") == []
    assert "has no model.pt yet" in caplog.text
    with pytest.raises(UserError, match="no config file"):
        experiments.config_rows([tmp_path / "missing.json"], data="unused")


def test_the_table_holds_every_row_the_baseline_and_the_anchors():
    latency = {"native model.int8.onnx": 0.15, "native model.int8.tflite": 0.06}
    record = {"name": "lstm128", "config": "configs/experiments/lstm128.json", "parameters": 1_438_608,
              "int8_onnx_mb": 1.5, "int8_tflite_mb": 1.6, **QUALITY, "latency_p50_ms": latency}  # fmt: skip
    ngram = {"name": "trigram", **QUALITY, "rouge1": 0.089}
    table = experiments.markdown([record], ngram)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 1 + 1 + len(experiments.ANCHORS)  # header, model, n-gram, anchors
    assert "| lstm128 | 1.44M | 1.50 / 1.60 | 0.1100 | 0.0200 |" in table
    assert "0.150 / 0.060 | — |" in table  # no emulated figure: shown as missing, not as zero
    assert "0.0890" in table
    assert "Hard et al., 2018" in table and "0.271" in table


def test_decoding_latency_times_every_decoding_on_every_prompt(exported_bundle, tweets_file, tmp_path, capsys):
    from benchmarks import decoding_latency

    out = tmp_path / "latency.json"
    code = decoding_latency.main([str(exported_bundle), "--file", "model.int8.onnx", "--data", str(tweets_file),
                                  "--prompts", "3", "--rounds", "2", "--warmup", "1", "--mbr-samples", "4",
                                  "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert list(report["decodings"]) == ["greedy", "beam 8", "MBR 4 samples"]
    calls = report["prompts"]["count"] * 2
    assert all(d["calls"] == calls and d["p50_ms"] > 0 for d in report["decodings"].values())
    assert report["decodings"]["greedy"]["p50_over_greedy"] == 1.0
    assert "MBR 4 samples" in capsys.readouterr().out

    assert decoding_latency.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_rows_whose_run_is_gone_are_carried_over_and_marked(tmp_path):
    def record(name, config, tflite_ms):
        return {"name": name, "config": config, "parameters": 3_000_000, "int8_onnx_mb": 3.3, "int8_tflite_mb": 3.4,
                **QUALITY, "latency_p50_ms": {"native model.int8.onnx": 0.4, "native model.int8.tflite": tflite_ms},
                "note": ""}  # fmt: skip

    earlier = tmp_path / "experiments.json"
    earlier.write_text(json.dumps({"rows": [
        record("shipped, greedy", "a.json -> b.json", 0.25),
        record("gru256", "configs/experiments/gru256.json", 0.2),
        record("lstm128", "configs/experiments/lstm128.json", 0.125),
    ]}))  # fmt: skip

    # gru256 was run again: its fresh row wins. The shipped model changed: its old rows stay, renamed.
    kept = experiments.carried_records(earlier, {"configs/experiments/gru256.json"}, "c.json -> d.json")
    assert [r["name"] for r in kept] == ["previously shipped, greedy", "lstm128"]
    assert all(r["note"].startswith(experiments.CARRIED) for r in kept)
    assert "| lstm128 \u2020 | 3.00M |" in experiments.markdown(kept, None)
    # Timed beside the shipped model of its own run: half its per-token latency, whatever the machine was.
    assert kept[1]["latency_vs_shipped"] == {"native model.int8.onnx": 1.0, "native model.int8.tflite": 0.5}
    assert "| 0.50 / — |" in experiments.markdown(kept, None)

    # The same shipped model: its rows are made afresh from its reports, not carried.
    assert [r["name"] for r in experiments.carried_records(earlier, set(), "a.json -> b.json")] == [
        "gru256", "lstm128"]  # fmt: skip
    assert experiments.carried_records(tmp_path / "none.json", set(), "x") == []
    earlier.write_text("not json")
    with pytest.raises(UserError, match="is not an experiments table"):
        experiments.carried_records(earlier, set(), "x")


def test_rows_take_turns_and_each_keeps_the_median_of_its_rounds(exported_bundle, tmp_path, monkeypatch):
    from benchmarks import bench

    calls = []
    # A burst of load in round two: it lands on one round of every row, and no row keeps it.
    timings = {
        ("a", "model.int8.onnx"): iter([0.10, 0.90, 0.12]),
        ("a", "model.int8.tflite"): iter([0.05, 0.50, 0.06]),
        ("b", "model.int8.onnx"): iter([0.20, 1.80, 0.22]),
        ("b", "model.int8.tflite"): iter([0.10, 1.00, 0.11]),
    }

    def fake_measure(entry, target, prompts, config, workdir, emulator):
        calls.append((entry.model, entry.file))
        return {"status": "ok", "token_ms_p50": next(timings[entry.model, entry.file])}

    monkeypatch.setattr(bench, "measure", fake_measure)
    rows = [experiments.Row(name, "c.json", exported_bundle) for name in ("a", "b")]
    for row in rows:
        experiments.describe(row)
    experiments.measure_latency(rows, tmp_path, emulated=False, rounds=3)

    one_round = [("a", "model.int8.onnx"), ("b", "model.int8.onnx"), ("a", "model.int8.tflite"),
                 ("b", "model.int8.tflite")]  # fmt: skip
    assert calls == one_round * 3
    assert rows[0].latency == {"native model.int8.onnx": 0.12, "native model.int8.tflite": 0.06}
    assert rows[1].latency == {"native model.int8.onnx": 0.22, "native model.int8.tflite": 0.11}
