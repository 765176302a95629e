"""Which encoding a text file is in, decided only when certain: a wrong guess turns names into mojibake that
is still valid text ("Zoë Müller" from Excel for Mac read as Windows-1252 is "Zo‘ MŸller"), and such a user
would be created with it.

UTF-8 (with or without BOM) and UTF-16 with its BOM are certain. Anything else is Windows-1252 only when its
bytes read as Western text in Windows-1252 and worse in the two encodings Excel also writes for "CSV": Mac
Roman (Excel for Mac) and Shift-JIS (Japanese Windows). Otherwise the file is refused with the fix.

Why not a general detector? charset-normalizer 3.5 took 6.6 s of CPU on the 1,000,000-row benchmark CSV saved
as Windows-1252 (pandas' C parser reads the whole file in 3.0 s), called it cp1250, and on short sheets of
names it guessed wrong every time: Mac Roman "Zoë Müller" as cp1250 "Zo‘ Mźller", genuine Windows-1252 as
cp775 "Zoļ M³ller". The three encodings in question differ exactly in the bytes 0x80-0xFF, so a look at the
words holding those bytes decides (0.2 s on that file).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from pathlib import Path

from ..errors import InputError

_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
FIX = "save it again as 'CSV UTF-8' (Excel: File > Save As > CSV UTF-8)"

#: A word holding at least one byte above ASCII, with the ASCII letters around it. Matched only from a word's
#: start (the lookbehind), possessively: else every letter of every ASCII word starts a scan to its end.
_WORD = re.compile(rb"(?<![A-Za-z\x80-\xff])[A-Za-z]*+[\x80-\xff][A-Za-z\x80-\xff]*")
#: The words are read a chunk at a time until at least this much of the file is read and one reading leads
#: the other by _DECISIVE points: a 92 MB Windows-1252 file is judged on its first 8 MB (~0.3 s), not all of
#: it (~3 s). A file that is still close to call is read to its end.
_CHUNK = 1024 * 1024
_EVIDENCE_BYTES = 8 * 1024 * 1024
_DECISIVE = 20
_JAPANESE_RUN = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uff66-\uff9f]{2,}")
#: Punctuation that may open a word (before a letter) or close one (after a letter) in Western text.
_OPENERS = frozenset("‘“„‚«‹¿¡–—(")
_CLOSERS = frozenset("’”»›…–—™®©°)")
_INSIDE = frozenset("’·-")
#: Latin-1 capitals that Western names rarely hold, and that Mac Roman reads where Windows-1252 has Ë Ì Í.
_RARE_LETTERS = frozenset("ÃÕÌË")


def decode(path: Path, raw: bytes) -> tuple[str, bytes]:
    """The text, and the UTF-8 bytes a parser gets (the original bytes when they already are UTF-8)."""
    if raw.startswith(_UTF16_BOMS):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: starts as UTF-16 but is damaged at byte {exc.start}") from None
        payload = None
    elif b"\x00" in raw:
        raise InputError(
            f"{path}: is not a text file (it holds NUL bytes; UTF-16 needs its byte-order mark, as Excel's "
            "'Unicode Text' writes it)"
        )
    else:
        body = raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
        try:
            text = body.decode("utf-8")
            payload = body
        except UnicodeDecodeError as exc:
            if raw.startswith(_UTF8_BOM) or _mostly_utf8(body):
                line = raw.count(b"\n", 0, exc.start) + 1
                raise InputError(
                    f"{path}: is not valid UTF-8 (line {line} mixes in another encoding); {FIX}"
                ) from None
            text = _windows_1252_if_certain(path, raw)
            payload = None
    if "\x00" in text:
        raise InputError(f"{path}: is not a text file (it holds NUL characters)")
    return text, payload if payload is not None else text.encode("utf-8")


def _mostly_utf8(body: bytes) -> bool:
    """Whether a file that is not valid UTF-8 is still mostly UTF-8: then it mixes encodings (a UTF-8 export
    with lines pasted from elsewhere), and reading it all as Windows-1252 would turn every name into mojibake.

    A Windows-1252 file can hold a valid UTF-8 pair by chance ("É" then a no-break space), but rarely more
    often than its invalid bytes, so the two counts decide.
    """
    text = body.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd")
    valid = len(text) - len(text.encode("ascii", errors="ignore")) - invalid
    return valid >= invalid


def _windows_1252_if_certain(path: Path, raw: bytes) -> str:
    """The text as Windows-1252 when that reading is clearly the most plausible; else one InputError line
    naming what the bytes look like."""
    western, mac = _western_and_mac(raw)
    japanese = _japanese_plausibility(raw)
    beats_japanese = japanese == 0 or western > japanese
    beats_mac = western > mac or western == mac == 0  # 0 and 0: no letter is at stake ("Sales – EMEA")
    if western >= 0 and beats_japanese and beats_mac:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            pass  # a byte Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D)
    if japanese > max(western, mac, 0):
        seen = "it reads like Shift-JIS (Japanese Windows)"
    elif mac > max(western, 0):
        seen = "it reads like Mac Roman (Excel for Mac)"
    else:
        seen = "it is not UTF-8, and neither Windows-1252 nor Mac Roman reads it as names"
    raise InputError(f"{path}: the text encoding cannot be told with confidence ({seen}); {FIX}")


def _western_and_mac(raw: bytes) -> tuple[int, int]:
    """How plausible the distinct words are as Windows-1252 and as Mac Roman (see `_plausibility`)."""
    seen: set[bytes] = set()
    western = mac = start = 0
    while start < len(raw):
        end = raw.find(b"\n", start + _CHUNK)
        end = len(raw) if end < 0 else end + 1
        for word in set(_WORD.findall(raw, start, end)) - seen:
            seen.add(word)
            western += _plausibility(word, "cp1252")
            mac += _plausibility(word, "mac_roman")
        start = end
        if start >= _EVIDENCE_BYTES and abs(western - mac) >= _DECISIVE:
            break
    return western, mac


def _plausibility(word: bytes, encoding: str) -> int:
    """Points for each byte above ASCII that reads as a Latin letter where a letter belongs (2 for the letters
    of Western names, 1 for rarer ones), -3 for each that reads as a capital inside a mixed-case word, as
    punctuation wedged into a word, or as nothing at all."""
    try:
        text = word.decode(encoding)
    except UnicodeDecodeError:
        return -3 * len(word)
    mixed_case = any(char.islower() for char in text)
    score = 0
    for index, char in enumerate(text):
        if ord(char) < 0x80:
            continue
        before = text[index - 1] if index else ""
        after = text[index + 1] if index + 1 < len(text) else ""
        score += _char_score(char, before, after, mixed_case)
    return score


def _char_score(char: str, before: str, after: str, mixed_case: bool) -> int:
    kind = unicodedata.category(char)
    letter_before, letter_after = before.isalpha(), after.isalpha()
    if kind in ("Lu", "Ll", "Lt"):
        if kind == "Lu" and letter_before and mixed_case:
            return -3  # "JosÈ", "MŸller", "OÕBrien"; "GARCÍA" is fine
        if kind == "Ll" and letter_before and after.isupper():
            return -3  # "OíBrien": Mac Roman's reading of "O’Brien"
        if not (letter_before or letter_after):
            return 0
        return 1 if char in _RARE_LETTERS or not "\u00c0" <= char <= "\u00ff" else 2
    if kind == "Sc" or kind.startswith("N") or kind == "Zs":
        return 0  # "Pa€€word", "5½", a no-break space
    if letter_before and letter_after:
        return 0 if char in _INSIDE else -3  # "O’Brien" is fine, "Bj‰rn" is not
    if letter_after and not letter_before:
        return 0 if char in _OPENERS else -3
    if letter_before and not letter_after:
        return 0 if char in _CLOSERS else -3  # "Zo‘": Mac Roman's "ë"
    return 0


def _japanese_plausibility(raw: bytes) -> int:
    """How many characters of Japanese words (runs of two or more kana/kanji) a Shift-JIS reading holds."""
    try:
        text = raw.decode("shift_jis")
    except UnicodeDecodeError:
        return 0
    return sum(len(run) for run in _JAPANESE_RUN.findall(text))
