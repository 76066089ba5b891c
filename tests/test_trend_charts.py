"""The trend charts (engine/measure/trend_svg.py) and their shaping (engine/measure/trends):
well-formed SVG, to scale, accessible (title, desc, a title per point), escaped, robust to
bad numbers; buckets, per-currency revenue and the A/B lift per bucket."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from engine.api.dashboard.trend_charts import trend_panels
from engine.measure import trend_svg
from engine.measure.trends import DAY, HOUR, Series, Trends, _buckets, bucket_for

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = 1_700_006_400  # 2023-11-15 00:00 UTC


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def points(root: ET.Element) -> list[tuple[float, float]]:
    return [
        (float(c.attrib["cx"]), float(c.attrib["cy"])) for c in root.iterfind(".//s:circle", NS)
    ]


def test_a_line_chart_is_to_scale_with_words_for_every_point() -> None:
    buckets = [T0 + i * DAY for i in range(4)]
    root = parse(
        trend_svg.line_chart(buckets, [("sends", [10, 20, 0, 40])], title="Sends", size=DAY)
    )
    assert root.find("s:title", NS).text == "Sends"  # type: ignore[union-attr]
    desc = root.find("s:desc", NS).text  # type: ignore[union-attr]
    assert desc == ("sends: 10 on 2023-11-15, 40 on 2023-11-18, peak 40 on 2023-11-18, total 70.")
    xy = points(root)
    assert len(xy) == 4
    assert xy[0][0] < xy[1][0] < xy[2][0] < xy[3][0]  # time runs left to right
    bottom, top = xy[2][1], xy[3][1]  # 0 at the bottom, the peak at the top
    assert abs((bottom - xy[0][1]) * 4 - (bottom - top)) < 0.2  # 10 is a quarter of 40
    titles = [t.text for t in root.iterfind(".//s:circle/s:title", NS)]
    assert titles[1] == "sends, 2023-11-16: 20"
    labels = ["".join(t.itertext()) for t in root.iterfind("s:text", NS)]
    assert "2023-11-15" in labels and "2023-11-18" in labels and "40" in labels


def test_hourly_labels_gaps_negative_values_and_escaping() -> None:
    buckets = [T0 + i * HOUR for i in range(3)]
    series = [("B vs <A>", [0.02, None, -0.01]), ("C", [float("nan"), 0.0, 0.01])]
    markup = trend_svg.line_chart(buckets, series, title="<lift>", size=HOUR)
    root = parse(markup)  # well-formed with the hostile names
    assert "<lift>" not in str(markup) and "&lt;lift&gt;" in str(markup)
    first = root.find(".//s:circle/s:title", NS)
    assert first is not None and first.text == "B vs <A>, 2023-11-15 00:00: 0.02"
    assert len(points(root)) == 4  # None and NaN are gaps, not points
    assert all(len(p.attrib["points"].split()) > 1 for p in root.iterfind(".//s:polyline", NS))
    zero = root.find("s:line", NS)
    ys = [y for _, y in points(root)]
    assert min(ys) < float(zero.attrib["y1"]) < max(ys)  # type: ignore[union-attr]


def test_a_sparkline_and_an_empty_chart() -> None:
    root = parse(trend_svg.sparkline([0, 5, 10], title="Sends of r1: 15 in all"))
    assert root.attrib["aria-label"] == "Sends of r1: 15 in all"
    line = root.find("s:polyline", NS)
    assert line is not None and len(line.attrib["points"].split()) == 3
    root = parse(trend_svg.line_chart([], [("sends", [])], title="Nothing", size=DAY))
    assert root.find("s:desc", NS).text == "sends: no data."  # type: ignore[union-attr]


def test_buckets_hourly_under_three_days_and_whole_ranges() -> None:
    assert bucket_for(T0, T0 + 2 * DAY) == HOUR
    assert bucket_for(T0, T0 + 3 * DAY) == DAY and bucket_for(None, T0) == DAY
    assert _buckets(T0 + 1800, T0 + 3 * HOUR - 1, HOUR, set()) == [T0, T0 + HOUR, T0 + 2 * HOUR]
    # until is now, and now counts: at the turn of an hour, the new hour is shown.
    assert _buckets(T0 + 1800, T0 + 3 * HOUR, HOUR, set())[-1] == T0 + 3 * HOUR
    assert _buckets(None, T0 + DAY + 5, DAY, {T0 - DAY}) == [T0 - DAY, T0, T0 + DAY]
    assert _buckets(None, T0, DAY, set()) == []
    # A range of decades starts at the first data; a month is shown whole.
    assert _buckets(0.0, T0 + DAY - 1, DAY, {T0 - DAY}) == [T0 - DAY, T0]
    assert len(_buckets(T0 - 30 * DAY, T0 + 1, DAY, {T0})) == 31


def test_panels_per_currency_and_the_lift_per_bucket() -> None:
    days = [T0, T0 + DAY]
    t = Trends(DAY, days, {}, Series(), Series(), {})
    rule = t.rules.setdefault("r1", Series())
    for variant, sends, conversions in (("A", (100, 100), (5, 10)), ("B", (100, 0), (8, 0))):
        s = t.variants.setdefault("r1", {}).setdefault(variant, Series())
        for day, n, c in zip(days, sends, conversions, strict=True):
            for target in (s, rule):
                target.add(day, [n, n, 0, 0, 0, 0, 0])
                target.add_orders(day, "EUR" if variant == "A" else "USD", c, 10.0 * c)
    [(label, lift)] = t.lift("r1", "A")
    assert label == "B vs A"
    assert lift[0] is not None and abs(lift[0] - 0.03) < 1e-9
    assert lift[1] is None  # B sent nothing that day
    panels = trend_panels(t, rule, "r1", t.lift("r1", "A"))
    titles = [parse(p).attrib["aria-label"] for p in panels]
    assert titles == [
        "Sends per day, r1",
        "Conversions (attributed orders) per day, r1",
        "Attributed revenue (EUR) per day, r1",
        "Attributed revenue (USD) per day, r1",
        "A/B lift per day: conversions per send over the baseline, r1",
    ]
    assert rule.revenue_total() == {"EUR": 150.0, "USD": 80.0}
    assert rule.total("sends") == 300 and rule.total("conversions") == 23
