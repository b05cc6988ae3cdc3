"""The benchmark stage: harness, targets, DistilGPT2 baseline, report, command.

Tiny models only: the tiny bundles of conftest and a two-layer GPT-2 with
the real tokenizer's vocabulary. Checks are on behaviour (what is measured,
where, under which limits, and what the report says), never on timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_WORDS

from benchmarks.bench import make_record, run_bench, summarise
from benchmarks.config import BenchConfig
from benchmarks.prompts import cut, prompts_from_texts
from benchmarks.targets import MIB, TARGETS, Target, run_worker
from benchmarks.worker import STATUS_NO_FIT, STATUS_OK, cpu_model
from edgecomplete.cli import main
from training.corpus import data_root

GPT2_DIR = data_root() / "gpt2"
PROMPT_TEXTS = ["i see you at the home tomorrow", "so happy today lol good night", "we love it at work"]
REQUIRED_FIELDS = [
    "model",
    "file",
    "quantization",
    "runtime",
    "runtime_version",
    "target",
    "threads",
    "size_bytes",
    "peak_rss_bytes",
    "load_ms",
    "token_ms_p50",
    "token_ms_p90",
    "token_ms_p99",
    "completion_ms_p50",
    "keystroke_ms_p50",
]


def spec_for(bundle: Path, file: str = "model.int8.onnx", **overrides) -> dict:
    spec = {
        "model": {"kind": "bundle", "bundle": str(bundle), "file": file},
        "threads": 1,
        "prompts": prompts_from_texts(PROMPT_TEXTS),
        "repeats": 2,
        "warmup_steps": 3,
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """Texts of the tiny vocabulary, enough for a test split to hold prompts."""
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(TINY_WORDS, size=rng.integers(4, 12))) for _ in range(600)]
    path = tmp_path_factory.mktemp("corpus") / "texts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- statistics and prompts ------------------------------------------------


def test_percentiles_interpolate_like_numpy():
    samples = [float(x) for x in range(1, 101)]
    stats = summarise(samples)
    assert stats["n"] == 100
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert summarise([]) == {"p50": None, "p90": None, "p99": None, "n": 0}


@pytest.mark.parametrize(("n", "m"), [(4, 1), (6, 2), (10, 2), (14, 4)])
def test_prompts_are_cut_as_the_quality_protocol_cuts(n, m):
    words = [f"w{i}" for i in range(n)]
    prompt = cut(words)
    assert prompt["m"] == m
    assert prompt["prefix"] + prompt["target"] == words


# -- the worker and its process -------------------------------------------


def test_worker_measures_the_bundle_and_its_suggestions_are_the_runtimes(tiny_bundle, tmp_path):
    import edge_runtime

    launch = run_worker(spec_for(tiny_bundle), TARGETS["native"], tmp_path / "w", timeout_s=300)
    assert launch.status == STATUS_OK, launch.log
    result = launch.result
    prompts = prompts_from_texts(PROMPT_TEXTS)
    # Every step of every prompt, twice, less the warm-up.
    steps = sum(1 + len(p["prefix"]) + len(p["target"]) for p in prompts)
    assert len(result["token_ms"]) == 2 * steps - 3
    assert len(result["keystroke_ms"]) == sum(len(" ".join(p["prefix"])) + 1 for p in prompts)
    assert len(result["first_token_ms"]) == len(result["completion_ms"]) == len(prompts)
    assert all(t > 0 for t in result["token_ms"])

    model = edge_runtime.load(tiny_bundle)
    for prompt, sample in zip(prompts, result["samples"]):
        text = " ".join(prompt["prefix"]) + " "
        assert sample["suggestions"] == [s.word for s in model.suggest(text, k=3)]
        assert sample["completion"] == model.complete(text, n_words=prompt["m"], stop_at_end=False)
        assert len(sample["completion"]) == prompt["m"]


def test_native_worker_is_pinned_to_one_core_with_one_thread(tiny_bundle, tmp_path):
    launch = run_worker(spec_for(tiny_bundle, repeats=1), TARGETS["native"], tmp_path / "w", timeout_s=300)
    assert launch.status == STATUS_OK, launch.log
    assert len(launch.result["affinity"]) == 1
    assert launch.result["affinity"] == launch.cpus
    assert launch.result["omp_num_threads"] == "1"


def test_peak_memory_is_the_workers_own_not_the_parents(tiny_bundle, tmp_path):
    # Linux carries ru_maxrss across fork and exec: a worker started from a
    # parent holding 600 MB would report 600 MB. VmHWM does not.
    ballast = np.ones(600 * MIB // 8)
    launch = run_worker(spec_for(tiny_bundle, repeats=1), TARGETS["native"], tmp_path / "w", timeout_s=300)
    assert ballast.sum() > 0
    assert launch.status == STATUS_OK, launch.log
    assert 10 * MIB < launch.result["peak_rss_bytes"] < 300 * MIB
    assert launch.result["rss_runtime_bytes"] <= launch.result["peak_rss_bytes"]


def test_a_model_over_the_memory_cap_is_reported_as_not_fitting(tiny_bundle, tmp_path):
    board = Target("tiny-board", 1, 1, 20 * MIB, False, "a board with 20 MiB")  # numpy alone needs more
    launch = run_worker(spec_for(tiny_bundle), board, tmp_path / "w", timeout_s=300)
    assert launch.status == STATUS_NO_FIT
    assert "does not fit in 20 MiB" in launch.result["error"]


def test_a_failing_model_is_a_status_not_a_crash(tiny_bundle, tmp_path):
    launch = run_worker(spec_for(tiny_bundle, file="missing.onnx"), TARGETS["native"], tmp_path / "w", timeout_s=300)
    assert launch.status == "error"
    assert "missing.onnx" in launch.result["error"]


def test_cpu_model_reads_an_arm_cpuinfo(monkeypatch, tmp_path):
    from benchmarks.setup_aarch64 import CPUINFO_CORE

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO_CORE.format(n=0))
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(cpuinfo if p == "/proc/cpuinfo" else p, *a, **k))
    assert cpu_model() == "ARM implementer 0x41 part 0xd08"


# -- DistilGPT2 ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A two-layer GPT-2 with the real vocabulary, saved for PyTorch and exported as int8 ONNX with its cache."""
    pytest.importorskip("transformers")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from benchmarks import distilgpt2

    if not (GPT2_DIR / "vocab.json").is_file():
        pytest.skip(f"GPT-2 tokenizer not found in {GPT2_DIR}: set EDGECOMPLETE_DATA")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder / "torch")
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    distilgpt2.export_decoder_with_past(model, fp32)
    distilgpt2.quantize(fp32, int8)
    return model, folder


def test_decoder_with_past_reproduces_transformers(tiny_gpt2):
    from benchmarks import distilgpt2

    model, folder = tiny_gpt2
    parity = distilgpt2.check_parity(model, folder / "model.onnx", folder / "model.int8.onnx")
    assert parity["fp32_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("kind", ["gpt2-onnx", "gpt2-torch"])
def test_gpt2_session_typing_equals_one_shot_suggestions(tiny_gpt2, kind):
    from benchmarks.runners import open_runner

    _, folder = tiny_gpt2
    spec = {"kind": kind, "tokenizer_dir": str(GPT2_DIR), "file": str(folder / "model.int8.onnx")}
    spec["model_dir"] = str(folder / "torch")
    runner = open_runner(spec, threads=1)

    words = ["see", "you", "at", "the"]
    session = runner.session()
    session.type(" ".join(words) + " ")
    suggestions = runner.suggest(words, 3)
    assert session.suggest(3) == suggestions
    assert len(suggestions) == 3 and all(w.isascii() and w == w.lower() for w in suggestions)

    # A typed letter narrows the suggestions to words that start with it.
    session.type("th")
    assert all(w.startswith("th") for w in session.suggest(3))
    assert len(runner.complete(words, 2)) <= 2


def test_cached_steps_continue_the_prefill(tiny_gpt2):
    from benchmarks.runners import open_runner

    _, folder = tiny_gpt2
    runner = open_runner({"kind": "gpt2-onnx", "tokenizer_dir": str(GPT2_DIR), "file": str(folder / "model.onnx")}, 1)
    ids = runner.token_ids(["good", "night", "and", "see", "you"])
    whole, _ = runner.feed(ids, runner.initial())
    state = runner.initial()
    for token in ids:
        stepped, state = runner.step(token, state)
    np.testing.assert_allclose(stepped, whole, atol=1e-4)


# -- the whole stage and its report ----------------------------------------


def test_bench_writes_the_report_with_every_setting(tiny_bundle, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "bench"
    config = BenchConfig(bundle=str(tiny_bundle), out_dir=str(out), targets=["native", "pi4"], data=str(tiny_corpus))
    config.distilgpt2, config.eval_texts, config.prompts, config.repeats = False, 0, 3, 1
    records = run_bench(config)

    assert {(r["file"], r["target"]) for r in records} == {
        (f, t) for f in ("model.onnx", "model.int8.onnx") for t in ("native", "pi4")
    }
    saved = json.loads((out / "bench.json").read_text())
    assert saved == json.loads(json.dumps(records))
    for record in saved:
        assert record["status"] == STATUS_OK
        assert all(record[name] is not None for name in REQUIRED_FIELDS), record
        assert record["size_bytes"] == (tiny_bundle / record["file"]).stat().st_size
        assert record["token_ms_p50"] <= record["token_ms_p90"] <= record["token_ms_p99"]
    pi4 = next(r for r in saved if r["target"] == "pi4")
    assert pi4["threads"] == 4 and pi4["memory_cap_bytes"] == 1024 * MIB

    assert json.loads((out / "bench-config.json").read_text())["targets"] == ["native", "pi4"]
    markdown = (out / "bench.md").read_text()
    assert "| model | file |" in markdown and "model.int8.onnx" in markdown
    for chart in ("chart-size.png", "chart-memory.png", "chart-token-latency.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["model", "file"]
    assert sum("native" in line for line in table.splitlines()) == 2


def test_a_report_without_the_prompts_text(tiny_bundle, tiny_corpus, tmp_path):
    from benchmarks.prompts import typical_prompts

    out = tmp_path / "bench"
    config = BenchConfig(bundle=str(tiny_bundle), out_dir=str(out), data=str(tiny_corpus), files=["model.int8.onnx"])
    config.distilgpt2, config.eval_texts, config.prompts, config.repeats = False, 0, 3, 1
    config.quote_prompts = False
    run_bench(config)

    prompts, _ = typical_prompts(str(tiny_corpus), 3)
    written = "".join(p.read_text() for p in out.rglob("*") if p.suffix in (".json", ".md"))
    for prompt in prompts:
        assert " ".join(prompt["prefix"]) not in written
    assert not (out / "workers").exists()
    (record,) = json.loads((out / "bench.json").read_text())
    assert len(record["samples"]) == 3 and all(s["suggestions"] and s["completion"] for s in record["samples"])


def test_saved_eval_reports_fill_the_quality_table(tiny_bundle, tiny_corpus, tmp_path):
    """With --eval-texts 0 the bundle's own test-split reports are shown, each beside its own file."""
    import shutil

    from benchmarks.bench import plan_models
    from edge_runtime.manifest import load_manifest
    from training.evaluate import evaluate_path

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    report = evaluate_path(bundle, tiny_corpus, split="test", limit=5, model_file="model.int8.onnx")
    (bundle / "eval-int8-onnx.json").write_text(json.dumps(report), encoding="utf-8")
    (bundle / "eval-broken.json").write_text("{not json", encoding="utf-8")
    (bundle / "eval-train.json").write_text(json.dumps(report | {"split": "train"}), encoding="utf-8")
    beam = report | {"beam_width": 4, "rouge1": 0.0}
    (bundle / "eval-z-beam4-int8-onnx.json").write_text(json.dumps(beam), encoding="utf-8")  # read last, skipped
    mbr = report | {"mbr": {"samples": 32}, "rouge1": 0.0}
    (bundle / "eval-z-mbr-int8-onnx.json").write_text(json.dumps(mbr), encoding="utf-8")  # greedy width, still skipped

    config = BenchConfig(bundle=str(bundle), data=str(tiny_corpus), distilgpt2=False, eval_texts=0)
    entries = {e.file: e for e in plan_models(config, load_manifest(bundle))}
    scored = entries["model.int8.onnx"]
    assert scored.quality == {k: report[k] for k in ("n", "rouge1", "rouge2", "rougeL", "top1", "top3",
                                                     "keystroke_savings")}  # fmt: skip
    assert "eval-int8-onnx.json" in scored.quality_note
    assert entries["model.onnx"].quality is None and not entries["model.onnx"].quality_note


def test_headline_compares_the_int8_word_model_with_distilgpt2():
    from benchmarks.report import headlines

    def record(model, file, token, rss, size):
        return {"model": model, "file": file, "target": "native", "status": STATUS_OK, "token_ms_p50": token,
                "peak_rss_bytes": rss, "model_rss_bytes": rss // 2, "size_bytes": size}  # fmt: skip

    lines = headlines(
        [
            record("lstm-256", "model.onnx", 0.2, 80, 20),
            record("lstm-256", "model.int8.onnx", 0.1, 60, 5),
            record("lstm-256", "model.int8.tflite", 0.05, 50, 4),
            record("distilgpt2", "model.int8.onnx", 10, 300, 100),
        ]
    )
    assert lines == [
        "native: lstm-256 model.int8.onnx against distilgpt2 model.int8.onnx: per-token p50 100x lower, "
        "peak RSS 5.0x lower (5.0x above the interpreter's own), file 20x smaller",
        "native: lstm-256 model.int8.tflite against distilgpt2 model.int8.onnx: per-token p50 200x lower, "
        "peak RSS 6.0x lower (6.0x above the interpreter's own), file 25x smaller",
    ]


def test_a_record_that_did_not_fit_keeps_its_settings():
    from benchmarks.bench import ModelEntry
    from benchmarks.targets import Launch

    entry = ModelEntry("distilgpt2", "model.safetensors", "fp32", {}, 300 * MIB, False, weights="random")
    launch = Launch(STATUS_NO_FIT, {"error": "does not fit in 512 MiB"}, [1], 512 * MIB, 600 * MIB, 3.0, -9, "")
    spec = {"prompts": [], "k": 3, "repeats": 1, "warmup_steps": 0, "warmup_calls": 0}
    record = make_record(entry, TARGETS["pi-zero-2w"], launch, spec)
    assert record["status"] == STATUS_NO_FIT and record["error"] == "does not fit in 512 MiB"
    assert record["token_ms_p50"] is None and record["size_bytes"] == 300 * MIB
    assert record["memory_cap_bytes"] == 512 * MIB and record["threads"] == 4


# -- the command -----------------------------------------------------------


def test_cli_refuses_an_unknown_target_before_any_work(tiny_bundle, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--targets", "native,pi5", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown target 'pi5'" in result.output
    assert not (tmp_path / "bench.json").exists()


def test_cli_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "is not a bundle" in result.output


def test_emulated_target_needs_its_setup_first(tiny_bundle, tmp_path):
    args = ["bench", str(tiny_bundle), "--targets", "emulated-aarch64", "--no-distilgpt2", "--out", str(tmp_path)]
    result = CliRunner(env={"EDGECOMPLETE_AARCH64_DIR": str(tmp_path / "nothing")}).invoke(main, args)
    assert result.exit_code == 2
    assert "python -m benchmarks.setup_aarch64" in result.output
