"""bench/bench_generation.py scores every guidance × best-of setting it is given, on the same prompts and seeds."""

from __future__ import annotations

import json
import tempfile

import pytest
from bench_script import load_bench


def test_each_setting_gets_a_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the tiny models' folder
    out = tmp_path / "gen.json"
    args = ["--tiny", "--prompts", "2", "--images", "1", "--prior-best-of", "1", "--prior-best-of", "3",
            "--guidance", "decoder=1.5", "--decoder-best-of", "1", "--decoder-best-of", "2"]
    assert load_bench("bench_generation").main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = list(result["rows"].values())
    assert [(row["prior_best_of"], row["decoder_best_of"]) for row in rows] == [(1, 1), (1, 2), (3, 1), (3, 2)]
    assert all(row["guidance"]["decoder"] == 1.5 for row in rows)
    assert all(0 <= row[k] <= 1 for row in rows for k in ("caption_top5", "caption_real_top5", "zeroshot_shape"))
    assert all(row["clip_score_low"] <= row["clip_score"] <= row["clip_score_high"] for row in rows)
    table = capsys.readouterr().out
    assert "| prior best of | decoder best of |" in table and table.count("| 1.5 |") == 0 and table.count("decoder 1.5 |") == 4
    assert "zeroshot_shape" in table and "clip_score_real" in table


@pytest.mark.parametrize("option", ["--prior-best-of", "--decoder-best-of"])
def test_a_wrong_best_of_is_refused(option):
    with pytest.raises(SystemExit) as err:
        load_bench("bench_generation").main(["--tiny", option, "0"])
    assert err.value.code == 2
