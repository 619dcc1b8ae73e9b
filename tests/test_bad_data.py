"""The bad-data corpus: every kind of broken, odd or surplus file and caption row (data/testing.py's
cases plus what only a folder or a tar shard can hold). Every image, file and caption row must come
out kept (as an example), converted (kept and counted by its source mode) or skipped and counted,
over both splits together."""

from __future__ import annotations

import io
import tarfile
from collections import Counter

from data import DatasetConfig, SkipCounter, open_dataset
from data.testing import cases, image_bytes, write_folder, write_shard

CASES = cases()
KEPT = {c.name for c in CASES if c.skip is None}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'


def read_both_splits(cfg):
    datasets = [open_dataset(cfg, split) for split in ("train", "val")]
    examples = [e for ds in datasets for e in ds]
    return examples, SkipCounter().merge(datasets[0].skips).merge(datasets[1].skips)


def write_folder_extras(root) -> dict[str, int]:
    """What only a folder holds, beside the cases: returns the skips it must cause."""
    (root / "drawing.svg").write_bytes(SVG)  # a vector image this reader cannot decode
    (root / "drawing.txt").write_text("a black square")  # its caption, then, captions nothing
    (root / "README.md").write_text("my photos")
    (root / "zz_copy.png").write_bytes((root / "rgb_png.png").read_bytes())  # same picture...
    (root / "zz_copy.txt").write_text("a red circle")  # ...and caption as rgb_png: a duplicate
    for name in ("indexed", "twice"):
        (root / f"{name}.png").write_bytes(image_bytes(size=(30, 30)))
    (root / "captions.tsv").write_text("file\tcaption\nindexed.png\ta green circle\n"
                                       "twice.png\tfirst caption\ntwice.png\tsecond caption\n"
                                       "gone.png\tno such image\n")
    (root / "captions.jsonl").write_text('{"file": "indexed.png", "caption": "a green disc"}\nnot json\n')
    return {"unsupported_format": 2, "caption_without_image": 2, "duplicate_file": 1, "repeated_caption": 2,
            "bad_caption_row": 1}


def test_folder_keeps_converts_or_counts_everything(tmp_path):
    write_folder(tmp_path, CASES, "txt")
    extra = write_folder_extras(tmp_path)
    examples, skips = read_both_splits(DatasetConfig.parse({"source": "folder", "path": str(tmp_path),
                                                            "val_fraction": 0.3}))
    got = {e.key: e.caption for e in examples}
    assert set(got) == {f"{c.name}.{c.extension}" for c in CASES if c.skip is None} | {"indexed.png", "twice.png"}
    assert got["indexed.png"] == "a green disc" and got["twice.png"] == "second caption"  # the later row wins
    assert skips.skipped == dict(Counter(c.skip for c in CASES if c.skip) + Counter(extra))
    assert skips.converted == dict(Counter(c.converted_from for c in CASES if c.converted_from))
    kinds = {c.skip or c.converted_from or c.name for c in CASES} | set(extra)
    assert len(kinds) >= 20, kinds


def test_a_tighter_aspect_limit_skips_more(tmp_path):
    (tmp_path / "wide.png").write_bytes(image_bytes(size=(90, 30)))
    (tmp_path / "wide.txt").write_text("a wide picture")
    cfg = {"source": "folder", "path": str(tmp_path), "val_fraction": 1e-9}
    assert [e.key for e in open_dataset(DatasetConfig.parse(cfg), "train")] == ["wide.png"]
    tight = open_dataset(DatasetConfig.parse({**cfg, "max_aspect": 2}), "train")
    assert list(tight) == [] and tight.skips.skipped == {"extreme_aspect": 1}


def test_webdataset_keeps_converts_or_counts_everything(tmp_path):
    write_shard(tmp_path / "00000.tar", CASES[:12])
    write_shard(tmp_path / "00001.tar", CASES[12:])
    with tarfile.open(tmp_path / "00002.tar", "w") as tar:  # a key whose only picture is an SVG
        for name, data in (("drawing.svg", SVG), ("drawing.txt", b"a black square")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    examples, skips = read_both_splits(DatasetConfig.parse({"source": "webdataset", "path": str(tmp_path),
                                                            "val_fraction": 0.3}))
    assert {e.key for e in examples} == KEPT and len(examples) == len(KEPT)
    assert skips.skipped == dict(Counter(c.skip for c in CASES if c.skip) + Counter({"missing_image": 1}))
    assert skips.converted == dict(Counter(c.converted_from for c in CASES if c.converted_from))


def test_the_counts_reach_each_stage_summary():
    from flows.stage import StageResult
    from flows.train import summary_line

    metrics = {"retrieval_top1": 0.5, "data.skipped": 3.0, "data.skipped.corrupt_image": 2.0,
               "data.skipped.extreme_aspect": 1.0, "data.converted.animated": 1.0}
    line = summary_line(StageResult("clip", "unclip-clip", "1", None, metrics, promoted=True))
    assert "skipped data: corrupt_image 2, extreme_aspect 1" in line and "converted data: animated 1" in line


def test_inference_reads_a_16_bit_png_as_training_does(tmp_path):
    import numpy as np

    from data.images import load_rgb
    from unclip.images import load_image

    path = tmp_path / "deep.png"
    path.write_bytes(image_bytes("I;16"))
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_rgb(path)[0]))
    assert (np.asarray(load_image(path)) == 255).mean() < 0.1  # rescaled, not clipped to white
