"""One data setting for the whole cascade: `--data` and `data.*` reach every stage that reads images."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from data.config import expand_braces
from flows.presets import DATA_STAGES, cascade_settings, data_overrides


def test_data_reaches_every_image_stage_and_per_stage_overrides_still_win():
    settings = cascade_settings("smoke", ["data.val_fraction=0.2", "upsampler2.data.val_fraction=0.3"],
                                data="folder:/data/mine")
    for stage in DATA_STAGES:
        data = getattr(settings, stage).data
        assert (data.source, data.path) == ("folder", "/data/mine"), stage
    assert settings.clip.data.val_fraction == settings.upsampler1.data.val_fraction == 0.2
    assert settings.upsampler2.data.val_fraction == 0.3
    assert settings.data_source == "folder"


def test_set_data_is_the_same_as_data():
    a = cascade_settings("smoke", ["data.source=webdataset", "data.path=/s/{000..009}.tar"])
    b = cascade_settings("smoke", data="webdataset:/s/{000..009}.tar")
    assert a == b


@pytest.mark.parametrize(("spec", "message"), [("banana", "unknown source"), ("folder", "needs a path"),
                                               ("webdataset:", "needs a path")])
def test_bad_data_is_a_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        data_overrides(spec)


def test_the_command_line_refuses_bad_data_before_any_work(capsys):
    from flows.train import main

    assert main(["--preset", "smoke", "--data", "banana"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "unknown source" in err and "Traceback" not in err
    assert main(["--preset", "smoke", "--set", "data.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_webdataset_brace_notation_expands_to_zero_padded_names():
    assert expand_braces("/s/{000..002}.tar") == ["/s/000.tar", "/s/001.tar", "/s/002.tar"]
    assert expand_braces("/s/{a,b}-{0..1}.tar") == ["/s/a-0.tar", "/s/a-1.tar", "/s/b-0.tar", "/s/b-1.tar"]
    assert expand_braces("/s/plain.tar") == ["/s/plain.tar"]


def test_the_shapes_extras_are_that_datasets_recipe_and_overrides_still_win():
    shapes, emoji, own = (cascade_settings("demo", data=d) for d in ("shapes", "emoji", "folder:/data/mine"))
    assert (shapes.decoder.outline_weight, shapes.decoder.decoder.refine_width) == (8.0, 32)
    assert shapes.decoder.eval.decoder_best_of == 4
    for real in (emoji, own):  # measured on emoji: the outline weight adds speckle, the others do nothing
        assert (real.decoder.outline_weight, real.decoder.decoder.refine_width) == (0.0, 0)
        assert real.decoder.eval.decoder_best_of == 1
    assert shapes.decoder.decoder.draft_width == emoji.decoder.decoder.draft_width == 1024  # kept on both
    tuned = cascade_settings("demo", ["decoder.outline_weight=2"], data="shapes")
    assert tuned.decoder.outline_weight == 2.0
