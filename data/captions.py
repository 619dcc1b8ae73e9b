"""Turning raw caption bytes or text into one clean line, or saying why it is unusable."""

from __future__ import annotations

import unicodedata

from data.skips import BadItem


class BadCaption(BadItem):
    """missing_caption, empty_caption or bad_caption_encoding."""


def clean_caption(text: str) -> str:
    """NFC-normalise, drop byte-order marks, turn control characters into spaces, collapse whitespace."""
    text = unicodedata.normalize("NFC", text).replace("\ufeff", "")
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return " ".join(text.split())


def decode_caption(raw: bytes) -> str:
    """UTF-8, with or without a byte-order mark; anything else is bad_caption_encoding."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadCaption("bad_caption_encoding", str(err)) from None


def caption_text(raw: bytes | str | None) -> str:
    """A usable caption from whatever a source found (None: there was no caption)."""
    if raw is None:
        raise BadCaption("missing_caption")
    text = decode_caption(raw) if isinstance(raw, bytes) else raw
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates from a lenient decode upstream
        raise BadCaption("bad_caption_encoding", str(err)) from None
    text = clean_caption(text)
    if not text:
        raise BadCaption("empty_caption")
    return text
