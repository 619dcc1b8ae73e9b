"""bench/bench_precision.py runs end to end on tiny networks and reports every figure it promises."""

from __future__ import annotations

import json
import math

from bench_script import load_bench


def test_a_tiny_run_reports_every_stage(tmp_path, capsys):
    out = tmp_path / "speed.json"
    args = ["--tiny", "--repeats", "1", "--curve-steps", "3", "--images", "2", "--prior-steps", "2",
            "--decoder-steps", "2", "--decoder-best-of", "2", "--skip-pipeline", "--json", str(out)]
    assert load_bench("bench_precision").main(args) == 0
    report = json.loads(out.read_text())
    assert report["peak_gflops"]["fp32"] > 0 and report["peak_gflops"]["bf16"] > 0
    assert set(report["sampling"]) == {"clip", "prior", "decoder", "upsampler1", "upsampler2"}
    for name, row in report["sampling"].items():
        assert math.isfinite(row["ratio"]) and row["gflops"]["fp32"] > 0, name
        assert row["kernels"]["calls"] > 0 and 0 < row["kernels"]["share"] and math.isfinite(row["kernels"]["ratio"])
    assert report["sampling"]["decoder"]["psnr_db"] >= 35 and report["sampling"]["upsampler2"]["psnr_db"] >= 35
    assert set(report["training"]) == {"decoder", "upsampler1", "upsampler2", "prior", "clip"}
    assert all(len(row["losses"]["bf16"]) == 3 for row in report["training"].values())
    assert {"prior", "decoder", "upsampler1", "upsampler2", "decoder training"} <= set(report["auto"])
    printed = capsys.readouterr().out
    assert "machine peak" in printed and "its kernels alone" in printed and "| upsampler2 |" in printed and "auto chose" in printed
    assert "auto's hardware check: " in printed and report["auto_kernel_check"]


def test_the_op_profile_compares_both_precisions(tmp_path, capsys):
    out = tmp_path / "ops.json"
    args = ["--tiny", "--images", "1", "--top", "3", "--only", "upsampler2", "--kernels", "--json", str(out)]
    assert load_bench("profile_precision").main(args) == 0
    tables = json.loads(out.read_text())
    assert set(tables) == {"upsampler2 sampling", "upsampler2 training step", "upsampler2 sampling kernels"}
    kernels = tables.pop("upsampler2 sampling kernels")
    assert len(kernels) == 3 and all(row["calls"] > 0 and row["ms"]["bf16"] > 0 for row in kernels)
    assert kernels[0]["ms"]["fp32"] >= kernels[-1]["ms"]["fp32"]  # the costliest shapes first
    for table in tables.values():
        assert len(table["ops"]) == 3 and all(set(ms) == {"fp32", "bf16"} for ms in table["ops"].values())
    printed = capsys.readouterr().out
    assert "| op | fp32 ms |" in printed and "| kernel | operand shapes |" in printed
