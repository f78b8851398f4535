"""Terminal output of the CLI: a progress bar on stderr and plain-text tables."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, width: int = 30):
        self.label = label
        self.width = width
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        decile = int(fraction * 10)
        if not self.tty and decile == self.last_decile and done != total:
            return  # logs get one line per 10%, not one per row
        self.last_decile = decile
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"{self.label} [{bar}] {done}/{total} {time.monotonic() - self.start:5.1f}s"
        end = "\n" if (done == total or not self.tty) else ""
        sys.stderr.write(("\r" if self.tty else "") + line + end)
        sys.stderr.flush()


def format_table(rows: list[dict[str, str]]) -> str:
    """Left-aligned plain-text table; the keys of the first row are the headers."""
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys), "  ".join("-" * widths[k] for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
