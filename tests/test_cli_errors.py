"""Every command line on a corpus of bad invocations (tests/cli_corpus.py): one `error:` line on
stderr, exit status 2, no traceback, and no output folder left behind. Run in-process, on tiny
models, under a Prefect test harness and a private MLflow store."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from cli_corpus import build_fixtures, cases, judge

PLACEHOLDER = {name: Path("/placeholder") / name for name in
               ("models", "truncated", "mismatched", "damaged_clip", "picture", "file", "shards", "root")}
CASES = cases(PLACEHOLDER)


@pytest.fixture(scope="module", autouse=True)
def environment(tmp_path_factory):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNCLIP_MLFLOW_DIR", str(tmp_path_factory.mktemp("errors_mlruns")))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        with prefect_test_harness(server_startup_timeout=None), \
                temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return build_fixtures(tmp_path_factory.mktemp("corpus"))


def run_main(module: str, argv: list[str]) -> int:
    name = "data.emoji.__main__" if module == "data.emoji" else module
    try:
        return importlib.import_module(name).main(argv)
    except SystemExit as done:  # argparse's errors and --help
        return done.code


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{i:02d}-{c.module}" for i, c in enumerate(CASES)])
def test_bad_command_line_is_one_error_line(index, fixtures, capfd, monkeypatch, tmp_path):
    case = cases(fixtures)[index]
    if "cuda" in case.argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)  # default output folders (runs/, outputs/) land here
    root = fixtures["root"]
    before = set(root.iterdir())
    code = run_main(case.module, list(case.argv))
    _, err = capfd.readouterr()
    assert judge(code, err, case.pattern) is None, (case.id, judge(code, err, case.pattern), err[-2000:])
    left = {p.name for p in set(root.iterdir()) - before} | {p.name for p in tmp_path.iterdir()}
    assert not left, f"{case.id} left {left} behind"
