"""Server-rendered SVG charts."""

from __future__ import annotations

import re

from carecoord.web.charts import bar_chart, hbar_chart, line_chart


def test_bars_over_their_cap_are_red_and_the_cap_is_drawn() -> None:
    svg = bar_chart("Caseloads", ["Kim", "Luis"], [30.0, 10.0], caps=[20.0, 75.0])
    bars = re.findall(r'<rect class="bar"[^>]*fill="(#[0-9a-f]+)"', svg)
    assert bars == ["#a4262c", "#1f5f99"]
    assert svg.count('class="cap"') == 2
    assert 'role="img"' in svg and "<title>Caseloads</title>" in svg


def test_labels_are_escaped() -> None:
    svg = bar_chart("<b>", ["<script>alert(1)</script>"], [1.0])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'aria-label="&lt;b&gt;"' in svg


def test_a_line_skips_missing_months_and_scales_percentages_to_100() -> None:
    svg = line_chart("Rate", ["2025-01", "2025-02", "2025-03"], [50.0, None, 100.0])
    assert svg.count('class="point"') == 2
    ys = [float(y) for y in re.findall(r'class="point" cx="[\d.]+" cy="([\d.]+)"', svg)]
    assert ys[1] < ys[0]  # 100 % is drawn higher than 50 %
    assert ">100<" in svg


def test_horizontal_bars_keep_long_names_readable_and_mark_caps() -> None:
    svg = hbar_chart("Caseloads", ["Kim Okafor", "Luis Fernández"], [22.5, 8.0], caps=[20.0, 75.0])
    assert ">Kim Okafor<" in svg and ">Luis Fernández<" in svg
    fills = re.findall(r'<rect class="bar"[^>]*fill="(#[0-9a-f]+)"', svg)
    assert fills == ["#a4262c", "#1f5f99"]
    assert svg.count('class="cap"') == 2
