"""Tiny synthetic image–caption files covering every kind of bad data, for tests.

`cases()` lists items with what a reader must make of them; `write_folder` and `write_shard`
lay them out as a folder dataset or an img2dataset tar shard.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

CaptionSource = Literal["txt", "tsv", "jsonl"]


@dataclass(frozen=True)
class Case:
    name: str  # file stem and key
    extension: str  # image file extension, without the dot
    image: bytes
    caption: bytes | None  # None: no caption at all
    skip: str | None = None  # the reason a reader must count it under, or None if kept
    converted_from: str | None = None  # the mode a kept image is converted from
    expected_caption: str | None = None  # the cleaned caption of a kept item


def image_bytes(
    mode: str = "RGB", size: tuple[int, int] = (24, 20), fmt: str = "PNG", **save: object
) -> bytes:
    """A small image of one mode: a left-to-right ramp, so conversions can be checked."""
    ramp = np.tile(np.linspace(0, 1, size[0]), (size[1], 1))
    rgb = Image.fromarray(np.stack([ramp * 255, ramp * 128, 255 - ramp * 255], -1).astype(np.uint8))
    if mode == "I;16":
        image = Image.fromarray((ramp * 65535).astype(np.uint16))
    elif mode == "I":
        image = Image.fromarray((ramp * 65535).astype(np.int32))
    elif mode == "F":
        image = Image.fromarray(ramp.astype(np.float32))
    elif mode == "P":
        image = rgb.convert("P")
    else:
        image = rgb.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def animated_gif_bytes(frames: int = 3, size: tuple[int, int] = (24, 20)) -> bytes:
    """A GIF of several frames of different greys: readers keep the first and count it."""
    images = [Image.new("RGB", size, (40 + 60 * i, 20, 200 - 50 * i)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def random_bytes(n: int = 300, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# Mode -> file format that keeps it (PNG cannot store PA, CMYK, I or F).
ODD_MODES = {
    "1": "png",
    "L": "png",
    "LA": "png",
    "P": "png",
    "PA": "tif",
    "RGBA": "png",
    "CMYK": "jpg",
    "I": "tif",
    "I;16": "png",
    "F": "tif",
}
FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}


def cases() -> list[Case]:
    good = b"a red circle"
    jpeg = image_bytes(size=(64, 48), fmt="JPEG")
    items = [
        Case("rgb_png", "png", image_bytes(), good, expected_caption="a red circle"),
        Case("rgb_jpg", "jpg", jpeg, b"  a \t blue\n square  ", expected_caption="a blue square"),
        Case("rgb_webp", "webp", image_bytes(fmt="WEBP"), "café ☕".encode(), expected_caption="café ☕"),
        Case("rgb_bmp", "bmp", image_bytes(fmt="BMP"), b"\xef\xbb\xbfwith bom", expected_caption="with bom"),
        Case(
            "p_gif", "gif", image_bytes(fmt="GIF"), good, converted_from="P", expected_caption="a red circle"
        ),
        Case(
            "p_transparent",
            "png",
            image_bytes("P", transparency=0),
            good,
            converted_from="P",
            expected_caption="a red circle",
        ),
        Case("truncated", "jpg", jpeg[: len(jpeg) // 2], good, skip="truncated_image"),
        Case("garbage", "png", random_bytes(), good, skip="corrupt_image"),
        Case("empty_file", "jpg", b"", good, skip="corrupt_image"),
        Case("tiny", "png", image_bytes(size=(30, 4)), good, skip="tiny_image"),
        Case("strip", "png", image_bytes(size=(6000, 8)), good, skip="extreme_aspect"),
        Case("animated", "gif", animated_gif_bytes(), good, converted_from="animated",
             expected_caption="a red circle"),
        Case("no_caption", "png", image_bytes(), None, skip="missing_caption"),
        Case("blank_caption", "png", image_bytes(), b" \t ", skip="empty_caption"),
        Case("latin1_caption", "png", image_bytes(), b"caf\xe9 noir", skip="bad_caption_encoding"),
    ]
    for mode, ext in ODD_MODES.items():
        name = "mode_" + mode.replace(";", "_").lower()
        items.append(
            Case(
                name,
                ext,
                image_bytes(mode, fmt=FORMATS[ext]),
                good,
                converted_from=mode,
                expected_caption="a red circle",
            )
        )
    return items


def write_folder(root: Path, items: list[Case], captions: CaptionSource = "txt", subfolder: str = "") -> None:
    """Images under root/subfolder, captions as sidecar .txt files or one index file at the root."""
    (root / subfolder).mkdir(parents=True, exist_ok=True)
    tsv, jsonl = [b"filename\tcaption"], []
    for case in items:
        rel = f"{subfolder}/{case.name}.{case.extension}" if subfolder else f"{case.name}.{case.extension}"
        (root / rel).write_bytes(case.image)
        if case.caption is None:
            continue
        if captions == "txt":
            (root / rel).with_suffix(".txt").write_bytes(case.caption)
        elif captions == "tsv":
            tsv.append(rel.encode() + b"\t" + case.caption.replace(b"\n", b" "))
        else:
            text = case.caption.decode("utf-8", "surrogateescape").replace("\n", " ")
            jsonl.append(json.dumps({"file": rel, "caption": text}).encode("utf-8", "surrogateescape"))
    if captions == "tsv":
        (root / "captions.tsv").write_bytes(b"\n".join(tsv) + b"\n")
    if captions == "jsonl":
        (root / "captions.jsonl").write_bytes(b"\n".join(jsonl) + b"\n")


def write_shard(path: Path, items: list[Case], json_captions: bool = False) -> None:
    """An img2dataset-style tar: KEY.<ext> then KEY.txt (or KEY.json with "caption")."""
    with tarfile.open(path, "w") as tar:
        for case in items:
            members = [(f"{case.name}.{case.extension}", case.image)]
            if case.caption is not None and json_captions:
                text = case.caption.decode("utf-8", "surrogateescape")
                members.append(
                    (f"{case.name}.json", json.dumps({"caption": text}).encode("utf-8", "surrogateescape"))
                )
            elif case.caption is not None:
                members.append((f"{case.name}.txt", case.caption))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
