"""The benchmark scripts stay runnable: each answers --help, and the GPU one runs on the CPU in its reduced form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_explains_itself(script):
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "usage:" in run.stdout and len(run.stdout) > 300, run.stderr[-2000:]


def gpu_benchmark_report(argv: list[str], cwd: Path) -> dict:
    """``bench_gpu.py`` run on the CPU with ``argv``: the JSON report it prints."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_gpu.py"), *argv],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report: dict = json.loads(run.stdout[run.stdout.index("{\n") :])
    return report


@pytest.mark.slow
def test_gpu_benchmark_runs_reduced_on_the_cpu(tmp_path):
    pytest.importorskip("trl")
    argv = [
        "--reduced",
        "--train-steps",
        "2",
        "--train-batch",
        "2",
        "--tokens",
        "4",
        "--batch-sizes",
        "1",
        "2",
    ]
    report = gpu_benchmark_report(argv, tmp_path)
    assert report["architecture"] == "reduced"
    assert report["finetune"]["train_samples_per_s"] > 0 and report["finetune"]["model_tflops_per_sample"] > 0
    assert report["finetune_full_logits"]["train_samples_per_s"] > 0
    assert (
        report["answer_only_logits"]["samples_per_s_ratio"] > 0
        and report["answer_only_logits"]["peak_memory_ratio"] > 0
    )
    assert [row["batch"] for row in report["extract"]] == [1, 2]
    assert all(row["images_per_s"] > 0 for row in report["extract"])


@pytest.mark.slow
def test_gpu_benchmark_measures_jump_forward_on_memorised_labels_reduced_on_the_cpu(tmp_path):
    """``--jump-forward`` memorises generated labels, checks that the three modes write them, and reports seconds,
    forward passes (fewer with jump-forward) and the per-round ratios per batch size."""
    pytest.importorskip("trl")
    pytest.importorskip("xgrammar")
    argv = ["--reduced", "--jump-forward", "--docs", "2", "--rounds", "1", "--batch-sizes", "1", "2"]
    report = gpu_benchmark_report(argv, tmp_path)["jump_forward"]
    assert report["memorised_at_step"] is not None, report
    assert [row["batch"] for row in report["batches"]] == [1, 2]
    for row in report["batches"]:
        passes = row["passes_per_doc"]
        assert passes["jump-forward"] < passes["constrained"] == passes["unconstrained"], row
        assert len(row["round_ratios"]) == 1 and row["ratio"] > 0
