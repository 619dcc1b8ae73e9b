"""flows.train.run_lanes: stages trained side by side, each with its share of the CPU threads."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest
import torch

from core.threads import follow_share, post_share
from flows.train import run_lanes


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_jobs_run_side_by_side_with_a_share_of_the_threads(two_threads):
    barrier = threading.Barrier(2, timeout=10)  # broken (an error) unless both jobs run at once
    seen = {}

    def job(name):
        def run():
            barrier.wait()
            seen[name] = torch.get_num_threads()
            return name.upper()
        return run

    out = run_lanes({"a": job("a"), "b": job("b")}, lanes=2)
    assert out == {"a": "A", "b": "B"}
    assert seen == {"a": 1, "b": 1}
    assert torch.get_num_threads() == 2  # the caller keeps its threads


def test_one_lane_runs_in_order_in_the_calling_thread(two_threads):
    order = []
    caller = threading.get_ident()

    def job(name):
        def run():
            order.append((name, threading.get_ident() == caller, torch.get_num_threads()))
            return name
        return run

    assert run_lanes({"x": job("x"), "y": job("y"), "z": job("z")}, lanes=1) == {"x": "x", "y": "y", "z": "z"}
    assert order == [("x", True, 2), ("y", True, 2), ("z", True, 2)]


def test_more_lanes_than_jobs_gives_each_job_the_threads_it_can_have(two_threads):
    assert run_lanes({"only": torch.get_num_threads}, lanes=4) == {"only": 2}


def test_at_most_lanes_jobs_run_at_once(two_threads):
    running, peak, lock = 0, 0, threading.Lock()

    def job():
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return True

    assert run_lanes({str(i): job for i in range(5)}, lanes=2) == {str(i): True for i in range(5)}
    assert peak == 2


def test_a_failure_is_raised_and_no_later_job_starts(two_threads):
    started = []
    release = threading.Event()

    def fail():
        started.append("fail")
        raise ValueError("stage broke")

    def slow():
        started.append("slow")
        release.wait(5)
        return "slow"

    def later():
        started.append("later")
        return "later"

    def release_soon():
        time.sleep(0.2)
        release.set()

    threading.Thread(target=release_soon).start()
    with pytest.raises(ValueError, match="stage broke"):
        run_lanes({"slow": slow, "fail": fail, "later": later}, lanes=2)
    assert sorted(started) == ["fail", "slow"]  # the running job ends; the queued one never starts
    assert torch.get_num_threads() == 2


def test_jobs_see_the_callers_context(two_threads):
    var = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    assert run_lanes({"a": var.get, "b": var.get}, lanes=2) == {"a": "caller", "b": "caller"}


def test_the_last_lane_running_takes_the_threads_of_the_lanes_that_ended(two_threads):
    short_done = threading.Event()
    seen = []

    def long():
        seen.append(torch.get_num_threads())
        short_done.wait(10)
        for _ in range(100):  # a training loop follows its share between steps
            follow_share()
            if torch.get_num_threads() == 2:
                break
            time.sleep(0.01)
        seen.append(torch.get_num_threads())
        return "long"

    def short():
        return "short"

    def signal_after_short():
        time.sleep(0.1)
        short_done.set()

    threading.Thread(target=signal_after_short).start()
    assert run_lanes({"long": long, "short": short}, lanes=2) == {"long": "long", "short": "short"}
    assert seen == [1, 2]
    assert torch.get_num_threads() == 2


def test_queued_jobs_keep_the_lanes_share_until_none_is_left(two_threads):
    seen = {}

    def job(name):
        def run():
            time.sleep(0.05)
            follow_share()
            seen[name] = torch.get_num_threads()
            return name
        return run

    # three jobs, two lanes: whichever ends first hands its lane to the third, so every job runs on one
    # thread until nothing is queued; only then may the survivor grow
    run_lanes({"a": job("a"), "b": job("b"), "c": job("c")}, lanes=2)
    assert seen["a"] == seen["b"] == 1


def test_a_share_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        post_share(0)
