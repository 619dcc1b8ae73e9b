"""Shapes captions: the canonical sentence, meaning-preserving paraphrases, and parsing back."""

from __future__ import annotations

import random
import re

from data.shapes.spec import ATTRIBUTE_VALUES, COLORS, SHAPES, ShapeAttributes

WHERE = {
    "center": "in the center",
    "top": "at the top",
    "bottom": "at the bottom",
    "left": "on the left",
    "right": "on the right",
}

# Paraphrase vocabulary: every phrase names exactly one attribute value.
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
WHERE_PHRASES = {
    "center": ("in the center", "centered", "in the middle"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
}
BACKGROUND_PHRASES = ("on {a} {bg} background", "on {a} {bg} backdrop", "against {a} {bg} background")
# Clause orders; {background} is one of BACKGROUND_PHRASES, {a} an article agreeing with the next word.
TEMPLATES = (
    "a {size} {color} {shape} {where} {background}",
    "{a_color} {color} {shape}, {size}, {where}, {background}",
    "a {size} {color} {shape} {background}, {where}",
    "{background}, a {size} {color} {shape} {where}",
    "{a_bg} {bg} background with a {size} {color} {shape} {where}",
)


def canonical_caption(attrs: ShapeAttributes) -> str:
    """'a {size} {color} {shape} {where} on a {background} background' (the fixed article is the spec)."""
    return f"a {attrs.size} {attrs.color} {attrs.shape} {WHERE[attrs.position]} on a {attrs.background} background"


def caption_with(attrs: ShapeAttributes, **changes: str) -> str:
    """The canonical caption with some attributes swapped, e.g. caption_with(a, color="blue")."""
    return canonical_caption(attrs.replace(**changes))


def candidate_captions(attrs: ShapeAttributes, attribute: str) -> list[str]:
    """Zero-shot candidates for one attribute: the true caption with it set to each of its values."""
    return [caption_with(attrs, **{attribute: value}) for value in ATTRIBUTE_VALUES[attribute]]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def paraphrase_caption(attrs: ShapeAttributes, rng: random.Random) -> str:
    """A random caption with the same meaning as the canonical one (word choice and clause order)."""
    background = rng.choice(BACKGROUND_PHRASES).format(a=_article(attrs.background), bg=attrs.background)
    return rng.choice(TEMPLATES).format(
        size=rng.choice(SIZE_WORDS[attrs.size]),
        color=attrs.color,
        shape=attrs.shape,
        where=rng.choice(WHERE_PHRASES[attrs.position]),
        background=background,
        bg=attrs.background,
        a_color=_article(attrs.color),
        a_bg=_article(attrs.background),
    )


def _alternatives(words: object) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _template_pattern(template: str) -> re.Pattern[str]:
    colors, article = _alternatives(COLORS), "an?"
    groups = {
        "size": f"(?P<size>{_alternatives(w for ws in SIZE_WORDS.values() for w in ws)})",
        "color": f"(?P<color>{colors})",
        "shape": f"(?P<shape>{_alternatives(SHAPES)})",
        "where": f"(?P<where>{_alternatives(p for ps in WHERE_PHRASES.values() for p in ps)})",
        "background": f"(?:on|against) {article} (?P<background>{colors}) (?:background|backdrop)",
        "bg": f"(?P<background>{colors})",
        "a_color": article,
        "a_bg": article,
    }
    # Templates hold only words, spaces and commas, so they need no escaping.
    return re.compile(re.sub(r"\ba\b", article, template).format(**groups))


PATTERNS = tuple(_template_pattern(t) for t in TEMPLATES)
_SIZE_OF = {w: size for size, ws in SIZE_WORDS.items() for w in ws}
_POSITION_OF = {p: pos for pos, ps in WHERE_PHRASES.items() for p in ps}


def parse_caption(text: str) -> ShapeAttributes | None:
    """The attributes a canonical or paraphrased caption describes (no jitter), or None."""
    text = re.sub(r"\s*,\s*", ", ", " ".join(text.lower().split())).rstrip(".")
    for pattern in PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return ShapeAttributes(
                color=match["color"],
                shape=match["shape"],
                size=_SIZE_OF[match["size"]],
                position=_POSITION_OF[match["where"]],
                background=match["background"],
            )
    return None
