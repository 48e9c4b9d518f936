"""Pages from templates, CSV tables, and writing a report's files (atomically, the page last).

Pages are Jinja2 templates in ``report/templates/`` (``base.html`` with the CSS and the blocks,
``macros.html`` for cards, tables and figures, one template per page) rendered with autoescape on:
every string from a result comes out escaped. The formatters of :mod:`exitwise.report.format`
are the templates' filters. Pages are self-contained: figures are embedded as base64 data URIs,
the CSS is inline, and there is no script.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from exitwise.atomic import atomic_write_bytes
from exitwise.report import format as fmt

__all__ = ["PageFigure", "csv_bytes", "embed", "render_page", "write_files"]


class PageFigure(NamedTuple):
    """A figure as a page embeds it: its file name and the PNG as a data URI."""

    name: str
    uri: str


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("exitwise.report", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({name: getattr(fmt, name) for name in fmt.__all__})
    return env


def render_page(template: str, **context: Any) -> bytes:
    """``template`` rendered with ``context``, as UTF-8 bytes."""
    return _environment().get_template(template).render(**context).encode("utf-8")


def embed(figures: Mapping[str, bytes]) -> list[PageFigure]:
    """The figures in display order, each with its PNG as a base64 data URI."""
    return [
        PageFigure(name, "data:image/png;base64," + base64.b64encode(png).decode("ascii"))
        for name, png in figures.items()
    ]


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_files(out_dir: str | Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write ``files`` (name -> bytes, all rendered beforehand) atomically, in order.

    Put the page last: a failure on the way leaves the previous page (or none), never a page
    that points at figures or tables that were not written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_bytes(out / name, data) for name, data in files.items()]
