"""Progress of long work (decoding a collection, featurizing it, predicting on it, a training epoch), on stderr.

On a terminal, a tqdm bar with the rate and the time left, once the work has taken ``delay`` seconds. Anywhere
else (a DVC log, CI, a pipe) a carriage return would pile a bar's every refresh onto one unreadable line, so the
same tqdm status becomes a plain line every ``PLAIN_INTERVAL`` seconds (30; the environment variable
``SPECIESCLF_PROGRESS_SECONDS`` sets it), the first after that long, plus one when such work ends::

    featurize train:  40%|###############                        | 82/205 [00:30<00:45,  2.71 recording/s]

Work shorter than that prints nothing, so a log of a small run reads as it did without progress.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

__all__ = ["PLAIN_INTERVAL", "note", "progress"]

T = TypeVar("T")

# no tqdm monitor thread: featurize forks its workers while a bar is open, and forking a process with a second
# thread can leave a lock held in the child; each refresh checks the time itself anyway
tqdm.monitor_interval = 0

PLAIN_INTERVAL = float(os.environ.get("SPECIESCLF_PROGRESS_SECONDS", "30"))  # seconds between plain lines


class _Lines:
    """A stream for tqdm off a terminal: each refresh is written as one line of its own, unless it counts no
    further than the last one (tqdm refreshes once more when it closes)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.count = ""

    def write(self, text: str) -> None:
        line = text.strip("\r\n").rstrip()
        count = re.sub(r"\|.*\|", "|", line.split("[")[0])  # description, percent, n/total; not the bar (its
        # width gives way to the rate's digits), times or rate
        if line.strip() and count != self.count:
            self.stream.write(line + "\n")
            self.count = count

    def flush(self) -> None:
        self.stream.flush()


def progress(
    items: Iterable[T],
    desc: str,
    unit: str,
    total: int | None = None,
    delay: float = 0.0,
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """``items``, yielded as they are, with their progress on ``stream`` (stderr) as the module doc says; ``delay``
    holds a terminal's bar back (a log's first line waits ``PLAIN_INTERVAL`` anyway)."""
    stream = stream if stream is not None else sys.stderr
    terminal = stream.isatty()
    bar = tqdm(
        items,
        desc=desc,
        unit=" " + unit,  # "2.7 recording/s", not "2.7recording/s"
        total=total,
        delay=delay if terminal else PLAIN_INTERVAL,
        file=stream if terminal else _Lines(stream),
        mininterval=0.1 if terminal else PLAIN_INTERVAL,
        maxinterval=PLAIN_INTERVAL,
        ascii=not terminal,  # log files and CI pages may not show the block characters
        dynamic_ncols=terminal,
        ncols=None if terminal else 100,
    )
    with bar:
        yield from bar


def note(message: str) -> None:
    """A line on stderr that does not break a progress bar drawn there."""
    tqdm.write(message, file=sys.stderr)
