"""The speed comparison with diffusers' UnCLIPPipeline builds both pipelines over one set of networks and runs them."""

from __future__ import annotations

import json
import math

from bench_script import load_bench


def test_both_pipelines_share_the_networks(tmp_path):
    bench = load_bench("bench_vs_diffusers")
    ours, theirs = bench.build(tmp_path)
    assert theirs.prior is ours.cascade.prior.prior
    assert theirs.decoder.unet is ours.cascade.decoder.unet
    assert theirs.text_proj is ours.cascade.decoder.text_proj


def test_a_short_run_times_both(tmp_path):
    out = tmp_path / "result.json"
    args = ["--repeats", "1", "--prior-steps", "2", "--decoder-steps", "2", "--json", str(out)]
    assert load_bench("bench_vs_diffusers").main(args) == 0
    result = json.loads(out.read_text())
    assert set(result["median_seconds"]) == {"unclip", "diffusers UnCLIPPipeline"}
    assert all(s > 0 for s in result["median_seconds"].values())
    assert math.isfinite(result["ratio_diffusers_over_ours"]) and result["steps"] == {"prior": 2, "decoder": 2}


def test_the_cascade_to_512_runs_both_pipelines(tmp_path):
    bench = load_bench("bench_vs_diffusers")
    result = bench.bench_cascade(1, tiny=True, prior_steps=2, decoder_steps=2)
    assert {"unclip", "diffusers fp32"} <= set(result["median_seconds"])
    assert all(s > 0 for row in result["median_seconds"].values() for s in row.values())
    assert math.isfinite(result["ratio_vs_diffusers_fp32"]["512 px"])
    assert set(result["failed"]) <= {"diffusers bf16"}  # bf16 runs where torch's CPU kernels allow
    assert "text -> 512 px" in bench.cascade_table(result)
