"""Where an image came from, stored in its PNG text chunks, and contact sheets of a run.

Every image the pipeline returns carries its record in `image.info["unclip"]` (a dict); `save_png`
writes it as text chunks, one per field (strings as they are, everything else as JSON):

    prompt, seed, steps, guidance, sampler, models, clip_fingerprint, task, ...

`read_png_metadata` reads them back, decoding the JSON fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps
from PIL.PngImagePlugin import PngInfo

from core.checkpoint import write_atomic

INFO_KEY = "unclip"
TEXT_FIELDS = ("prompt", "clip_fingerprint", "task", "from_caption", "to_caption", "source")


def attach(image: Image.Image, record: Mapping[str, Any]) -> Image.Image:
    """Store a provenance record on the image (kept in memory; `save_png` writes it)."""
    image.info[INFO_KEY] = dict(record)
    return image


def record_of(image: Image.Image) -> dict[str, Any]:
    return dict(image.info.get(INFO_KEY, {}))


def png_info(record: Mapping[str, Any]) -> PngInfo:
    info = PngInfo()
    info.add_text("software", "unclip")
    for key, value in record.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        info.add_text(key, text)  # non-Latin-1 text becomes an iTXt chunk
    return info


def save_png(image: Image.Image, path: str | Path, record: Mapping[str, Any] | None = None) -> Path:
    """Write `image` with its provenance (its own record, updated by `record`)."""
    path = Path(path)
    meta = {**record_of(image), **(record or {})}
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=png_info(meta)))
    return path


def read_png_metadata(path: str | Path) -> dict[str, Any]:
    """The text chunks of a PNG, JSON fields decoded."""
    with Image.open(path) as image:
        image.load()
        text = dict(getattr(image, "text", {}))
    out: dict[str, Any] = {}
    for key, value in text.items():
        if key in TEXT_FIELDS or key == "software":
            out[key] = value
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def contact_sheet(images: Sequence[Image.Image], columns: int | None = None, labels: Sequence[str] | None = None,
                  pad: int = 2, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """All images on one sheet, row-major, `columns` wide (default: about square), optional labels."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    label_h = 12 if labels else 0
    sheet = Image.new("RGB", (columns * (width + pad) + pad, rows * (height + pad + label_h) + pad), background)
    draw = ImageDraw.Draw(sheet)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        x, y = pad + c * (width + pad), pad + r * (height + pad + label_h)
        sheet.paste(image.convert("RGB"), (x, y))
        if labels:  # a label may run on under the tiles after it that have none, to the row's end
            span = 1
            while c + span < columns and i + span < len(labels) and not labels[i + span]:
                span += 1
            draw.text((x + 1, y + height), str(labels[i])[: max(1, span * width // 6)], fill=(0, 0, 0))
    return sheet


def pair_sheet(left: Sequence[Image.Image], right: Sequence[Image.Image], labels: Sequence[str],
               pairs_per_row: int = 4) -> Image.Image:
    """Pairs side by side (e.g. generated | real), `pairs_per_row` pairs a row, each labelled; the right
    images are fitted to the left ones' size."""
    if len(left) != len(right) or len(left) != len(labels):
        raise ValueError(f"{len(left)} left images, {len(right)} right images and {len(labels)} labels")
    tiles, names = [], []
    for a, b, label in zip(left, right, labels):
        tiles += [a, ImageOps.fit(b.convert("RGB"), a.size, method=Image.Resampling.BICUBIC)]
        names += [label, ""]
    return contact_sheet(tiles, columns=2 * pairs_per_row, labels=names)


def save_run(images: Sequence[Image.Image], out_dir: str | Path, stem: str, columns: int | None = None,
             labels: Sequence[str] | None = None, grid_record: Mapping[str, Any] | None = None) -> tuple[list[Path], Path]:
    """Write `stem-000.png`, ... with their provenance, and `stem-grid.png`; returns (paths, grid path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [save_png(image, out_dir / f"{stem}-{i:03d}.png") for i, image in enumerate(images)]
    grid = contact_sheet(images, columns, labels)
    record = dict(grid_record or {})
    record.setdefault("images", [p.name for p in paths])
    grid_path = save_png(grid, out_dir / f"{stem}-grid.png", record)
    return paths, grid_path
