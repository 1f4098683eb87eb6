"""The one rule for user and item keys, the same on every write and every read (API, page, CLI, CSV).

A key is what people and sites name things by, and it ends up in URLs (``/users/<key>``), file
listings and logs, so it must look like what it is: nothing invisible, nothing that reads as a
path step, nothing that could not be decoded.
"""

from __future__ import annotations

import unicodedata

from recsys.errors import RecsysError

USER_KEY_LENGTH = 255  # users.key
ITEM_KEY_LENGTH = 512  # items.key

#: Unicode categories never allowed: control, format (bidi overrides, zero-width characters),
#: surrogates, private use, unassigned, line and paragraph separators.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
#: Default-ignorable code points that are not of those categories (Unicode's
#: Default_Ignorable_Code_Point): fillers and joiners that render as nothing.
_IGNORABLE = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG / JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ / AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTORS
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xE0100, 0xE01EF),  # VARIATION SELECTORS SUPPLEMENT
)


#: Characters that show as a blank or a box, though of categories allowed otherwise.
_BLANK = {0x2800, 0xFFFC}  # BRAILLE PATTERN BLANK, OBJECT REPLACEMENT CHARACTER


def _invisible(c: str) -> bool:
    code, category = ord(c), unicodedata.category(c)
    return (
        category in _FORBIDDEN_CATEGORIES
        or (category == "Zs" and c != " ")  # spaces that look like a space, or like nothing
        or code in _BLANK
        or any(a <= code <= b for a, b in _IGNORABLE)
    )


def check_key(key: str, what: str, max_length: int) -> str:
    """``key`` if it is a usable key, else a one-line ``RecsysError`` naming ``what`` and the fault."""
    if not key:
        raise RecsysError(f"empty {what}")
    if len(key) > max_length:
        raise RecsysError(f"{what} longer than {max_length} characters")
    if not (key.isascii() and key.isprintable()):  # printable ASCII has none of what follows
        _check_characters(key, what)
    if any(part in (".", "..") for part in key.replace("\\", "/").split("/")):
        raise RecsysError(f"{what} {key[:60]!r} has a '.' or '..' step, which reads as a path")
    return key


def _check_characters(key: str, what: str) -> None:
    if "\ufffd" in key:
        raise RecsysError(f"{what} is not valid UTF-8 (it holds U+FFFD, the mark of undecodable bytes)")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise RecsysError(f"{what} is not valid Unicode (a lone surrogate)")
    bad = next((c for c in key if _invisible(c)), None)
    if bad is not None:
        name = unicodedata.name(bad, f"U+{ord(bad):04X}")
        raise RecsysError(f"{what} contains an invisible, filler or control character ({name})")
    if unicodedata.combining(key[0]) or unicodedata.category(key[0]) in ("Mn", "Mc", "Me"):
        raise RecsysError(f"{what} starts with a combining mark")


def user_key(raw: object) -> str:
    """A user key: Unicode NFC, trimmed, 1 to 255 characters, and ``check_key``'s rule, so two keys
    that look alike are alike. Any other character, "/" included, is kept as given."""
    if not isinstance(raw, str):
        raise RecsysError("user key must be text")
    if raw.isascii():  # already NFC, and no surrogate
        return check_key(raw.strip(), "user key", USER_KEY_LENGTH)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in raw):
        raise RecsysError("user key is not valid Unicode (a lone surrogate)")
    return check_key(unicodedata.normalize("NFC", raw).strip(), "user key", USER_KEY_LENGTH)


def item_key(raw: object, what: str = "item key") -> str:
    """An item key, as given (trimmed), under ``check_key``'s rule."""
    if not isinstance(raw, str):
        raise RecsysError(f"{what} must be text")
    return check_key(raw.strip(), what, ITEM_KEY_LENGTH)
