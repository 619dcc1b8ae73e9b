"""bench/kernel_bound.py records the matmuls and convolutions a call runs and replays exactly those."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from bench_script import load_bench


def test_it_records_each_kernel_with_its_layout_and_nothing_else():
    kb = load_bench("kernel_bound")
    x = torch.randn(2, 5, 8)
    w, b = torch.randn(3, 8), torch.randn(3)
    image = torch.randn(1, 4, 6, 6).to(memory_format=torch.channels_last).bfloat16()
    kernel = torch.randn(2, 4, 3, 3).bfloat16()

    def run():
        F.silu(F.linear(x, w, b))
        F.conv2d(image, kernel, padding=1)

    calls = kb.record(run)
    assert kb.summary(calls) == {"addmm": 1, "convolution": 1}
    addmm, conv = calls
    assert [a[1] for a in addmm.args[:3]] == [(3,), (10, 8), (8, 3)]
    assert conv.args[0] == ("tensor", (1, 4, 6, 6), image.stride(), torch.bfloat16)
    assert conv.args[0][2] != torch.empty(1, 4, 6, 6).stride()  # channels-last kept
    assert conv.args[4] == (1, 1)  # padding as given


def test_the_replay_runs_the_same_kernels_on_fresh_tensors():
    kb = load_bench("kernel_bound")
    x = torch.randn(4, 8).t()  # a transposed (strided) operand
    image = torch.randn(1, 4, 6, 6).to(memory_format=torch.channels_last)
    calls = kb.record(lambda: (x @ torch.randn(4, 2), torch.bmm(torch.randn(2, 3, 4), torch.randn(2, 4, 5)),
                               F.conv2d(image, torch.randn(2, 4, 3, 3), stride=2),
                               torch.addmm(torch.randn(2), torch.randn(3, 4), torch.randn(4, 2), beta=0.5)))
    assert len(calls) == 4 and ("beta", 0.5) in calls[-1].kwargs
    replay = kb.replayer(calls)
    assert kb.record(replay) == calls


def test_it_sees_whole_linears_under_inference_mode():
    kb = load_bench("kernel_bound")
    x, w = torch.randn(2, 4, 8), torch.randn(3, 8)

    def run():
        with torch.inference_mode():
            F.linear(x, w)

    assert kb.summary(kb.record(run)) == {"linear": 1}
