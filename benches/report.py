"""Writing a benchmark's results: the one place that decides what a run
leaves behind (JSON, a markdown table, charts) and what it says about it,
so run.py, latency.py and costs.py cannot drift apart."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Chart = tuple[str, Callable[[Path], None]]


def write(folder: Path, data_name: str, data: object, md_name: str, md: str, charts: Sequence[Chart] = ()) -> list[str]:
    """Write `data` as JSON and `md` (with a final newline) into `folder`,
    then each chart (file name, drawing function) that matplotlib can draw;
    without matplotlib, one line says how to get the charts. Returns the
    names written, in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / data_name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    (folder / md_name).write_text(md if md.endswith("\n") else md + "\n")
    written = [data_name, md_name]
    missing = []
    for name, draw in charts:
        try:
            draw(folder / name)
            written.append(name)
        except ImportError:
            missing.append(name)
    if missing:
        print(f"no charts ({', '.join(missing)}): matplotlib is not installed; pip install '.[bench]' adds it", file=sys.stderr)
    return written
