"""The four stages' training commands share one parser (core/cli.py): the same flags, checked the same way."""

from __future__ import annotations

import pytest

from clip import train as clip_train
from decoder import train as decoder_train
from prior import train as prior_train
from upsamplers import train as upsamplers_train

SHARED = {"--preset", "--out", "--set", "--threads", "--track", "--help"}
MAINS = {"clip.train": (clip_train, []), "prior.train": (prior_train, ["--shards", "x"]),
         "decoder.train": (decoder_train, ["--shards", "x"]), "upsamplers.train": (upsamplers_train, [])}


def flags(module, capsys) -> set[str]:
    with pytest.raises(SystemExit):
        module.main(["--help"])
    return {word.strip(",") for word in capsys.readouterr().out.split() if word.startswith("--")}


@pytest.mark.parametrize("name", MAINS)
def test_every_training_command_takes_the_shared_flags(name, capsys):
    module, _ = MAINS[name]
    assert SHARED <= flags(module, capsys)


@pytest.mark.parametrize("name", MAINS)
def test_a_wrong_preset_or_thread_count_is_one_argparse_error(name, capsys):
    module, required = MAINS[name]
    for bad, message in ((["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
                         (["--threads", "0"], "argument --threads: must be between 1")):
        with pytest.raises(SystemExit) as exit_status:
            module.main([*required, *bad])
        assert exit_status.value.code == 2 and message in capsys.readouterr().err
