"""Emoji identities: keys from OpenMoji file names, CLDR captions, and variant groups.

A key is the file name's code points in hex without FE0F (the emoji-presentation selector),
e.g. `1F9DA-1F3FF-200D-2642`: OpenMoji names files fully qualified, the emoji package lists
several qualifications of each sequence, and dropping FE0F on both sides pairs them.
"""

from __future__ import annotations

from functools import cache

import emoji

PRESENTATION_SELECTOR, ZWJ = 0xFE0F, 0x200D
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
GENDER_SIGNS = frozenset({0x2640, 0x2642})
# Gendered figures that have a neutral counterpart: man/woman, old man/woman, boy/girl.
NEUTRAL_FIGURE = {0x1F468: 0x1F9D1, 0x1F469: 0x1F9D1, 0x1F474: 0x1F9D3, 0x1F475: 0x1F9D3,
                  0x1F466: 0x1F9D2, 0x1F467: 0x1F9D2}
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
BLACK_FLAG, TAGS = 0x1F3F4, range(0xE0020, 0xE0080)

CodePoints = tuple[int, ...]


def key_of_file_name(stem: str) -> str | None:
    """The key of an OpenMoji-style file stem (`1F3F3-FE0F-200D-1F308`), None if it is not one."""
    try:
        points = tuple(int(part, 16) for part in stem.split("-"))
    except ValueError:
        return None
    if not points or any(not 0 < p <= 0x10FFFF for p in points):
        return None
    return format_key(points)


def format_key(points: CodePoints) -> str:
    return "-".join(f"{p:04X}" for p in points if p != PRESENTATION_SELECTOR)


def code_points(key: str) -> CodePoints:
    return tuple(int(part, 16) for part in key.split("-"))


@cache
def cldr_names() -> dict[str, tuple[str, float]]:
    """key -> (CLDR short name like `:man_fairy_dark_skin_tone:`, Emoji version it came in),
    from the fully qualified entry where there are several."""
    names: dict[str, tuple[str, float]] = {}
    for text, info in sorted(emoji.EMOJI_DATA.items(), key=lambda item: (item[1]["status"], item[0])):
        names.setdefault(format_key(tuple(ord(c) for c in text)), (info["en"], float(info["E"])))
    return names


def caption_of(key: str) -> str | None:
    """The CLDR short name as words (`man fairy dark skin tone`), flags as `flag India`."""
    entry = cldr_names().get(key)
    if entry is None:
        return None
    words = entry[0].strip(":").replace("_", " ")
    return f"flag {words}" if is_country_flag(code_points(key)) else words


def keep_order(key: str) -> tuple:
    """Of several named emoji drawn with the same pixels, the first by this order is kept: the
    least gendered, then the shortest sequence, then the oldest (`kiss` over `kiss woman man`,
    `student` over `man student`, `flag Spain` over `flag Ceuta & Melilla`)."""
    points = code_points(key)
    gendered = sum(p in GENDER_SIGNS or p in NEUTRAL_FIGURE for p in points)
    return gendered, len(points), cldr_names().get(key, ("", float("inf")))[1], key


def is_country_flag(points: CodePoints) -> bool:
    """A regional-indicator pair (country) or a black flag with tags (England, Scotland, Wales)."""
    if len(points) == 2 and all(p in REGIONAL_INDICATORS for p in points):
        return True
    return len(points) > 1 and points[0] == BLACK_FLAG and all(p in TAGS for p in points[1:])


def variant_group(key: str) -> str:
    """The key with skin tones and gender removed: the variants of one figure share it.

    `1F9DA-1F3FF-200D-2642` (man fairy, dark skin tone) and `1F9DA` (fairy) both give `1F9DA`;
    `1F468-200D-1F4BB` (man technologist) gives `1F9D1-1F4BB` like `1F9D1-200D-1F4BB`.
    """
    parts = []
    for point in code_points(key):
        if point in SKIN_TONES or point in GENDER_SIGNS or point == ZWJ:
            continue
        parts.append(NEUTRAL_FIGURE.get(point, point))
    return format_key(tuple(parts)) if parts else key
