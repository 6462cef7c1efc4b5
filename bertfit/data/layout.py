"""How a CSV/TSV file is laid out (delimiter, quoting, header row), and the guesses about it.

The options come from the commands' ``--delimiter``, ``--quoting`` and ``--no-header``;
``looks_like_header``, ``warn_if_quoted`` and ``other_delimiter`` look at a file's first rows so
that a wrong guess of the user's is said in one line naming the option that fixes it.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
from typing import Any

from bertfit.errors import ConfigError

DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
QUOTINGS = ("csv", "none")
SAMPLE_ROWS = 21  # the header and 20 rows: what the header and quoting guesses look at
SAMPLE_CHARS = 1 << 16  # ... and at most this much of the file
SCAN_CHARS = 1 << 20  # how far into a file CSV-quoted fields are looked for
# column names common enough to mark a first row as a header on their own
HEADER_NAMES = frozenset(
    "text label labels sentence sentence1 sentence2 premise hypothesis question answer "
    "review document title score id idx index".split()
)
NAME = re.compile(r"[A-Za-z_#][\w#. -]{0,39}")  # a column name: short, starts with a letter
WORD = re.compile(r"[A-Za-z_][\w.-]*")  # one word, no spaces
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

log = logging.getLogger("bertfit")


def delimiter_of(delimiter: str | None) -> str | None:
    """``delimiter`` as the one character it stands for (``\\t`` or ``tab``: a tab); None stays
    None (the extension decides). Anything else is a ConfigError naming ``--delimiter``."""
    if delimiter is None:
        return None
    char = "\t" if delimiter.lower() in ("\\t", "tab") else delimiter
    if len(char) != 1 or char in '"\r\n':
        raise ConfigError(
            f"--delimiter must be one character other than a quote or a line break ('\\t' for "
            f"a tab), got {delimiter!r}"
        )
    return char


def reading_problems(config: Any) -> list[str]:
    """The problems of a config's ``delimiter`` and ``quoting`` fields, for its ``validate()``."""
    problems = []
    try:
        delimiter_of(config.delimiter)
    except ConfigError as err:
        problems.append(str(err))
    if config.quoting not in (None, *QUOTINGS):
        problems.append(f"--quoting must be csv or none, got {config.quoting!r}")
    return problems


def file_options(config: Any) -> dict:
    """The reading options of a command's config (layout, bad rows), as ``read_examples``
    keyword arguments."""
    return {
        "header": config.header,
        "delimiter": config.delimiter,
        "quoting": config.quoting,
        "skip_bad_rows": getattr(config, "skip_bad_rows", False),
    }


def csv_dialect(fmt: str, delimiter: str | None, quoting: str | None) -> dict:
    """``csv.reader`` arguments: the extension's delimiter unless one is given; quoting off for
    tab-separated files (.tsv, a .txt read with a tab) unless ``quoting`` says otherwise."""
    delimiter = delimiter or ("," if fmt == "csv" else "\t")
    if quoting is None:
        tabbed = fmt == "tsv" or (fmt == "txt" and delimiter == "\t")
        quoting = "none" if tabbed else "csv"
    if quoting not in QUOTINGS:
        raise ConfigError(f"--quoting must be csv or none, got {quoting!r}")
    return {
        "delimiter": delimiter,
        "quoting": csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL,
    }


def first_rows(text: str, dialect: dict) -> list[list[str]]:
    """The first ``SAMPLE_ROWS`` rows as parsed, fewer where a row cannot be parsed (the full
    read reports it)."""
    reader = csv.reader(io.StringIO(text[:SAMPLE_CHARS], newline=""), **dialect)
    rows = []
    try:
        for row in itertools.islice(reader, SAMPLE_ROWS):
            rows.append(row)
    except csv.Error:
        pass
    return rows


def looks_like_header(rows: list[list[str]]) -> bool:
    """Whether the first of ``rows`` names the columns, for a file read by column numbers.

    Every field of it must be a short, distinct name that is not a number, and something must
    tell it from the rows below: a well-known column name (text, label, sentence, ...), a column
    holding only numbers below, or a one-word name above texts that are not names.
    Example: ``looks_like_header([["review", "stars"], ["Loved it!", "5"]])`` is True.
    """
    if len(rows) < 2 or not rows[0]:
        return False
    first = [field.strip() for field in rows[0]]
    if len(set(first)) < len(first) or not all(NAME.fullmatch(f) for f in first):
        return False
    if any(f.lower() in HEADER_NAMES for f in first):
        return True
    for i, name in enumerate(first):
        below = [row[i].strip() for row in rows[1:] if i < len(row) and row[i].strip()]
        if below and all(NUMBER.fullmatch(value) for value in below):
            return True
        if WORD.fullmatch(name) and any(not NAME.fullmatch(value) for value in below):
            return True
    return False


def warn_if_quoted(path, text: str, first: list[list[str]], delimiter: str) -> None:
    """One warning when fields look CSV-quoted, in a file read with quoting off, where those
    quotes would stay in the texts: a field in double quotes with "" inside in the first
    ``SCAN_CHARS`` (pandas quotes any text holding a quote so), or most fields of the first rows
    in double quotes (a writer that quotes everything)."""
    found = _doubled_quotes(text, delimiter)
    if found is None:
        wrapped = [
            (number, f)
            for number, row in enumerate(first, 1)
            for f in row
            if len(f) >= 2 and f[0] == f[-1] == '"'
        ]
        if not wrapped or 2 * len(wrapped) <= sum(map(len, first)):
            return
        found = wrapped[0]
    line, field = found
    shown = field if len(field) <= 40 else field[:37] + "..."
    log.warning(
        f"warning: {path}:{line}: a field in CSV quotes ({shown}); this file is read with quoting off, so "
        "the quotes would stay in the texts; pass --quoting csv to read such fields as quoted "
        "(--quoting none keeps them and silences this)"
    )


def _doubled_quotes(text: str, delimiter: str) -> tuple[int, str] | None:
    """(line, field) of the first field written in CSV quotes with "" inside, if any."""
    cut = re.escape(delimiter)
    # (?:[^"]|"")* reads each character one way only, so a long field costs linear time
    quoted = re.compile(rf'(?:^|{cut})("(?:[^"{cut}\r\n]|"")*")(?={cut}|\r?$)', re.M)
    for match in quoted.finditer(text, 0, SCAN_CHARS):
        if '""' in match.group(1)[1:-1]:
            return text[: match.start(1)].count("\n") + 1, match.group(1)
    return None


def other_delimiter(row: list[str], delimiter: str) -> str | None:
    """The delimiter at which ``row`` (as split at ``delimiter``) would have more fields, if any.
    Example: ``other_delimiter(["text;label"], ",")`` is ``";"``."""
    line = delimiter.join(row)
    counts = {d: line.count(d) for d in DELIMITERS if d != delimiter}
    guess = max(counts, key=counts.get)
    return guess if counts[guess] + 1 > len(row) and counts[guess] else None
