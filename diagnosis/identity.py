"""Patient identity on the way in: what a patient ID, an accession number, a name and a birth date
may hold, and whether an upload's demographics match the stored patient's.

Plain functions over strings and dates, no ORM: the upload form (so the API too) and the upload
service (for values read from DICOM tags) share them, so every path refuses the same input in the
same words. Nothing here cuts a value to fit: a value that does not fit is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import unicodedata
from typing import Any

EARLIEST_BIRTH_DATE = dt.date(1900, 1, 1)

# IDs: every control (C0, DEL, C1 with U+0085), format (zero-width, soft hyphen, bidi, BOM, tags),
# line/paragraph separator, surrogate, private-use or unassigned character: invisible or
# line-breaking, they let two values look alike or split a header/log line. Names refuse the same,
# keeping only ZWNJ and ZWJ, which Persian and Indic scripts need to spell a name; every bidi mark
# (LRM, RLM, ALM), embedding, override and isolate is refused, as they reorder what is shown.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAME_JOINERS = frozenset("\u200c\u200d")


def forbidden_character(value: str, *, identifier: bool = True) -> str | None:
    """The first character that an ID (or, with ``identifier=False``, a name) may not hold."""
    for ch in value:
        if unicodedata.category(ch) not in _FORBIDDEN_CATEGORIES:
            continue
        if not identifier and ch in _NAME_JOINERS:
            continue
        return ch
    return None


def control_character_problem(ch: str) -> str:
    """The end of a sentence that starts with the value's name."""
    return (
        f"contains a control or invisible character (U+{ord(ch):04X}), which it may not hold. "
        "Type the value again without line breaks, tabs or hidden characters."
    )


def text_problem(value: str, *, max_length: int, identifier: bool = True) -> tuple[str, str] | None:
    """(code, the end of a sentence that starts with the value's name) when the value is refused."""
    ch = forbidden_character(value, identifier=identifier)
    if ch is not None:
        return "control_character", control_character_problem(ch)
    if len(value) > max_length:
        return "too_long", (
            f"is {len(value)} characters long; at most {max_length} are kept, and cutting it could "
            "merge two different values. Check the value at its source."
        )
    return None


def birth_date_problem(value: dt.date | None, *, today: dt.date) -> str | None:
    """The end of a sentence that starts with "The birth date" when the date is refused."""
    if value is None:
        return None
    if value > today:
        return f"{value.isoformat()} is in the future. Check the patient's birth date."
    if value < EARLIEST_BIRTH_DATE:
        return (
            f"{value.isoformat()} is before {EARLIEST_BIRTH_DATE.year}. "
            "Check the patient's birth date."
        )
    return None


def name_key(name: str) -> str:
    """A name as compared for identity: case, DICOM's "^" separators and runs of spaces do not
    count ("DOE^JOHN" matches "Doe John"); the order of its parts does ("John Doe" does not)."""
    return " ".join(name.replace("^", " ").casefold().split())


@dataclasses.dataclass(frozen=True)
class Demographics:
    """A patient's name, sex and birth date; blank fields are unknown."""

    name: str = ""
    sex: str = ""
    birth_date: dt.date | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sex": self.sex,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
        }


def mismatched_fields(stored: Demographics, submitted: Demographics) -> list[str]:
    """The fields both sides know and disagree on. A blank field on either side is no mismatch."""
    fields = []
    if stored.name and submitted.name and name_key(stored.name) != name_key(submitted.name):
        fields.append("name")
    if stored.sex and submitted.sex and stored.sex != submitted.sex:
        fields.append("sex")
    if stored.birth_date and submitted.birth_date and stored.birth_date != submitted.birth_date:
        fields.append("birth_date")
    return fields
