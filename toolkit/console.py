"""What commands write to the terminal: strict JSON documents and progress lines on stderr."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import click


def json_text(document: Any) -> str:
    """Strict JSON: NaN and infinity (possible with --allow-nonfinite) become null."""
    return json.dumps(finite(document), indent=2, allow_nan=False)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float in it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def number(value: float) -> float:
    """A float as it should print in JSON: 4.8, not 4.800000000000001."""
    return float(f"{value:.12g}")


def say(text: str) -> None:
    """A status line on stderr (stdout holds the results)."""
    click.echo(text, err=True)


class Progress:
    """A one-line progress display on stderr: redrawn in place on a terminal, a line every tenth
    of the work (and at the end) in a log, so long work never runs silent."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int, text: str = "") -> None:
        tenth = done * 10 // max(total, 1)
        if self.tty:
            width = 30
            filled = width * done // max(total, 1)
            end = "\n" if done >= total else ""
            click.echo(
                f"\r{self.label} [{'#' * filled}{'-' * (width - filled)}] {done}/{total} {text:<40.40}{end}",
                err=True,
                nl=False,
            )
        elif tenth > self.shown or done >= total:
            self.shown = tenth
            click.echo(f"{self.label}: {done}/{total} {text}", err=True)


def epoch_progress(trainer: str, epochs: int):
    """rnn.train's progress callback (epoch, loss), shown as a Progress over the epochs."""
    show = Progress(f"training ({trainer})")
    return lambda epoch, loss: show(epoch + 1, epochs, f"loss {loss:.4g}")
