"""What a person's name may hold (DESIGN.md round 2, "Changed by the review findings").

A name ends up in mail that TaxEase signs, sometimes to an address its writer does not own
(issue 17 item 5). So a name holds only what names need: letters and combining marks (any
script), the ASCII space, apostrophes (``'`` and U+2019), hyphens and periods. The rule is an
allowlist by Unicode category, not a blocklist: line and paragraph separators (U+2028/U+2029),
bidirectional controls, zero-width characters, every other format (Cf) or control (Cc)
character, digits, symbols and other punctuation are refused because they are not on the list,
including characters Unicode has not assigned yet.
"""

from __future__ import annotations

import unicodedata

from taxease_auth.store.models import NAME_MAX_LENGTH

# ASCII apostrophe, typographic apostrophe (U+2019, what phones put in O'Brien), ASCII
# hyphen-minus and full stop ("St. John"). Nothing else outside letters and marks.
NAME_PUNCTUATION = frozenset("'\u2019-.")
# Only the ASCII space. The other space separators (no-break, thin, hair, ideographic...) look
# like a space or like nothing at all, so they can pad or align a greeting without showing it;
# first and last names are separate fields, so no one needs them. A paste that holds one gets a
# 422 that says so rather than a silent change of what the person typed.
NAME_SPACE = " "
# Trimmed from both ends, as before: the ASCII whitespace a form or a text area leaves around a
# value. Unicode separators, bidi controls and zero-width characters are refused even there.
TRIMMED = " \t\n\r\f\v"
# A letter carrying more marks than this is "zalgo" text that spills over the lines around it
# in a mail. Real orthographies stay far below it once composed (NFC): Vietnamese needs two,
# Hebrew with points and Tibetan stacks three or four.
MAX_MARKS_IN_A_ROW = 6


def clean_name(value: str) -> str:
    """Return ``value`` as a name to store: trimmed, composed (NFC) and checked.

    Trimming removes ASCII whitespace around the name. Raises ``ValueError`` with a message
    safe to show the client (it never quotes the input beyond naming one refused character by
    its code point) when the name is empty once trimmed, longer than ``NAME_MAX_LENGTH``
    characters once composed, or holds a character outside the rule above, a combining mark
    that follows no letter, or more than ``MAX_MARKS_IN_A_ROW`` marks on one letter.
    """
    name = unicodedata.normalize("NFC", value).strip(TRIMMED)
    if not name:
        raise ValueError("must not be empty")
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f"must be at most {NAME_MAX_LENGTH} characters")
    marks = 0
    after_letter = False
    for char in name:
        category = unicodedata.category(char)
        if category.startswith("M"):
            # A mark at the start, or after a space or punctuation, would combine with the
            # text the template puts before the name.
            marks += 1
            if not after_letter or marks > MAX_MARKS_IN_A_ROW:
                raise ValueError(_refused(char, "a combining mark in this place"))
            continue
        marks = 0
        after_letter = category.startswith("L")
        if not after_letter and char != NAME_SPACE and char not in NAME_PUNCTUATION:
            raise ValueError(_refused(char, "a character names do not need"))
    return name


def _refused(char: str, what: str) -> str:
    return (
        f"may hold only letters, spaces, apostrophes, hyphens and periods: "
        f"U+{ord(char):04X} is {what}"
    )
