"""The ratings file ``outputs/ratings.jsonl``: one JSON line per click on the Inspector's "Save rating".

    {"time": "...", "run": "<run folder>", "candidate": 2, "seed": 1234, "rating": "4", "note": "...", "score": 0.31}

It may be edited by hand, so each line is read on its own (a bad line is skipped and counted, never lost),
records are appended, and undo rewrites it atomically.
"""

from __future__ import annotations

import json
import math
import os
from bisect import bisect_left, bisect_right
from pathlib import Path

from helpers.records import write_atomic

RATINGS_FILE = "ratings.jsonl"


def read_ratings(path: str | Path) -> tuple[dict[tuple[str, int], dict], int]:
    """The latest rating per (run folder name, candidate index), and how many lines were skipped (not UTF-8,
    not a JSON object, no ``run``, ``candidate`` or ``rating``, or a ``note`` that is not text).

    >>> read_ratings(Path("no-such-file.jsonl"))
    ({}, 0)
    """
    ratings, skipped = {}, 0
    if not Path(path).is_file():
        return ratings, 0
    for raw in Path(path).read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            record = _rating_record(json.loads(raw.decode("utf-8")))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            record = None
        if record is None:
            skipped += 1
        else:
            ratings[(record["run"], record["candidate"])] = record  # later lines win
    return ratings, skipped


def _rating_record(data) -> dict | None:
    """A ratings line with checked fields (rating as text, note "" when absent), or None."""
    if not isinstance(data, dict):
        return None
    run, candidate, rating, note = data.get("run"), data.get("candidate"), data.get("rating"), data.get("note", "")
    if isinstance(candidate, str) and candidate.isdigit():
        candidate = int(candidate)
    if (not isinstance(run, str) or not isinstance(candidate, int) or isinstance(candidate, bool)
            or not isinstance(rating, (str, int, float)) or isinstance(rating, bool) or not isinstance(note, str)):
        return None
    return {**data, "candidate": candidate, "rating": str(rating), "note": note}


def append_rating(path: Path, record: dict) -> str:
    """Append ``record`` as one JSON line to the ratings file; returns the line written."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the note: write it as a JSON escape
        line = json.dumps(record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = "\n" if _ends_without_newline(path) else ""  # a file edited by hand: two records must not merge
    with open(path, "a", encoding="utf-8") as file:
        file.write(start + line + "\n")
    return line


def remove_rating_line(path: Path, line: str) -> bool:
    """Remove the last copy of ``line`` from the ratings file in one atomic step; False (the file untouched)
    when the line is not there. Every other line stays byte for byte."""
    path = Path(path)
    lines = path.read_bytes().splitlines(keepends=True) if path.is_file() else []
    ours = line.encode("utf-8")
    for position in range(len(lines) - 1, -1, -1):  # the last copy of the line is ours
        if lines[position].rstrip(b"\r\n") == ours:
            del lines[position]
            write_atomic(path, b"".join(lines))
            return True
    return False


def _ends_without_newline(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equally long lists: 1 the same order, -1 the reverse. Equal values share
    their mean rank, pairs with a NaN are left out; NaN when fewer than 3 pairs remain or a side is all equal.

    >>> spearman([1, 2, 3, 4], [10, 30, 20, 40]), round(spearman([1, 1, 2], [5, 6, 7]), 3), spearman([1, 2], [1, 2])
    (0.8, 0.866, nan)
    """
    pairs = [(x, y) for x, y in zip(map(float, a), map(float, b), strict=True) if x == x and y == y]  # NaN != NaN
    if len(pairs) < 3:
        return math.nan
    # Pearson's correlation of the ranks, each minus the mean rank (n - 1) / 2. A rank counts from 0; equal
    # values share the mean of their positions, (first + last) / 2.
    sides = [(side, sorted(side)) for side in zip(*pairs)]
    ra, rb = ([(bisect_left(s, v) + bisect_right(s, v) - len(s)) / 2 for v in side] for side, s in sides)
    cov, var_a, var_b = sum(x * y for x, y in zip(ra, rb)), sum(x * x for x in ra), sum(y * y for y in rb)
    return cov / math.sqrt(var_a * var_b) if var_a and var_b else math.nan
