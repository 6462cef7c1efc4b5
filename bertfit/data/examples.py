"""Examples (texts, pair texts, labels and their line numbers) and the columns they come from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Examples:
    """Texts (and optional pair texts and labels) read from one file, with their line numbers."""

    path: str
    texts: list[str]
    pairs: list[str] | None = None
    labels: list[str] | None = None
    lines: list[int] = field(default_factory=list)
    label_is_int: bool = False
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows left out
    fields: list[dict] | None = None  # every column of each row, when asked (keep_fields)

    @property
    def rows_read(self) -> int:
        return len(self.texts) + sum(self.dropped.values())

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int]) -> Examples:
        """The examples at ``indices``, in that order."""
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return Examples(
            self.path,
            pick(self.texts),
            pick(self.pairs),
            pick(self.labels),
            pick(self.lines),
            self.label_is_int,
            dict(self.dropped),
            pick(self.fields),
        )

    def describe(self) -> str:
        """ "1,000 rows read, 12 dropped (12 empty text)": what a reader did, for the log."""
        line = f"{self.rows_read:,} rows read"
        if self.dropped:
            why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.dropped.items()))
            line += f", {sum(self.dropped.values()):,} dropped ({why})"
        return line


@dataclass
class Columns:
    """Column names (or 0-based numbers) and the CLI flags that set them, for error messages."""

    text: str
    pair: str | None = None
    label: str | None = None

    def flags(self, with_labels: bool = True) -> list[tuple[str, str]]:
        """(flag, column) of each column in use, the label only ``with_labels``."""
        given = [("--text-column", self.text), ("--pair-column", self.pair)]
        if with_labels:
            given.append(("--label-column", self.label))
        return [(flag, str(column)) for flag, column in given if column is not None]

    def numeric(self, with_labels: bool = True) -> bool:
        """Whether every column in use is a 0-based number (a label not read does not count)."""
        return all(column.isdigit() for _, column in self.flags(with_labels))


MISSING = object()
