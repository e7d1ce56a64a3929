"""Server-rendered SVG charts (no script, so they pass a strict Content-Security-Policy)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "hbar_chart", "line_chart"]

_W, _H = 560, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 16, 40
_BAR = "#1f5f99"
_OVER = "#a4262c"
_CAP = "#5c5c5c"


def _frame(title: str, body: list[str], top: float) -> str:
    plot_h = _H - _TOP - _BOTTOM
    grid = []
    for i in range(5):
        value = top * i / 4
        y = _TOP + plot_h - plot_h * i / 4
        grid.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" stroke="#d0d0d0"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#333">{value:g}</text>'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(grid)}{''.join(body)}</svg>"
    )


def _nice_top(values: Sequence[float], floor: float) -> float:
    top = max([floor, *values]) or 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if top <= step * 4:
            return float(step * 4)
    return float(top)


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    caps: Sequence[float | None] | None = None,
    unit: str = "",
    top: float | None = None,
) -> str:
    """Vertical bars, one per label; a bar above its cap is drawn in red with the cap marked."""
    cap_values = [c for c in (caps or ()) if c is not None]
    ceiling = top or _nice_top([*values, *cap_values], 1.0)
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    slot = plot_w / max(len(values), 1)
    width = max(min(slot * 0.6, 48), 4)
    body: list[str] = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        cap = caps[i] if caps else None
        x = _LEFT + slot * i + (slot - width) / 2
        h = plot_h * min(value, ceiling) / ceiling
        y = _TOP + plot_h - h
        color = _OVER if cap is not None and value > cap else _BAR
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" '
            f'fill="{color}"><title>{escape(label)}: {value:g}{escape(unit)}</title></rect>'
        )
        if cap is not None:
            cy = _TOP + plot_h - plot_h * min(cap, ceiling) / ceiling
            body.append(
                f'<line class="cap" x1="{x - 3:.1f}" y1="{cy:.1f}" x2="{x + width + 3:.1f}" '
                f'y2="{cy:.1f}" stroke="{_CAP}" stroke-width="2" stroke-dasharray="4 2"/>'
            )
        body.append(
            f'<text x="{x + width / 2:.1f}" y="{_H - _BOTTOM + 14}" text-anchor="middle" '
            f'font-size="11" fill="#333">{escape(label[:12])}</text>'
        )
    return _frame(title, body, ceiling)


def line_chart(
    title: str, labels: Sequence[str], values: Sequence[float | None], *, unit: str = "%"
) -> str:
    """A line over labelled points (gaps where a value is None), 0-100 for percentages."""
    known = [v for v in values if v is not None]
    ceiling = 100.0 if unit == "%" else _nice_top(known, 1.0)
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    slot = plot_w / max(len(values), 1)
    points: list[tuple[float, float, str, float]] = []
    body: list[str] = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = _LEFT + slot * i + slot / 2
        body.append(
            f'<text x="{x:.1f}" y="{_H - _BOTTOM + 14}" text-anchor="middle" font-size="11" '
            f'fill="#333">{escape(label[:12])}</text>'
        )
        if value is not None:
            y = _TOP + plot_h - plot_h * min(value, ceiling) / ceiling
            points.append((x, y, label, value))
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        body.append(f'<polyline fill="none" stroke="{_BAR}" stroke-width="2" points="{path}"/>')
    for x, y, label, value in points:
        body.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{_BAR}">'
            f"<title>{escape(label)}: {value:.1f}{escape(unit)}</title></circle>"
        )
    return _frame(title, body, ceiling)


def hbar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    caps: Sequence[float | None] | None = None,
) -> str:
    """Horizontal bars with their labels on the left (for many or long labels); a bar above its
    cap is red, the cap a dashed mark."""
    row, left, right, top_pad = 22, 150, 16, 8
    height = top_pad * 2 + row * max(len(values), 1) + 18
    cap_values = [c for c in (caps or ()) if c is not None]
    ceiling = _nice_top([*values, *cap_values], 1.0)
    plot_w = _W - left - right
    body: list[str] = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        cap = caps[i] if caps else None
        y = top_pad + row * i
        w = plot_w * min(value, ceiling) / ceiling
        color = _OVER if cap is not None and value > cap else _BAR
        body.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="11" fill="#333">'
            f"{escape(label[:22])}</text>"
            f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{color}"><title>{escape(label)}: {value:g}</title></rect>'
        )
        if cap is not None:
            cx = left + plot_w * min(cap, ceiling) / ceiling
            body.append(
                f'<line class="cap" x1="{cx:.1f}" y1="{y + 1}" x2="{cx:.1f}" y2="{y + row - 3}" '
                f'stroke="{_CAP}" stroke-width="2" stroke-dasharray="3 2"/>'
            )
    base = top_pad + row * max(len(values), 1)
    for i in range(5):
        x = left + plot_w * i / 4
        body.append(
            f'<text x="{x:.1f}" y="{base + 14}" text-anchor="middle" font-size="11" '
            f'fill="#333">{ceiling * i / 4:g}</text>'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {_W} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )
