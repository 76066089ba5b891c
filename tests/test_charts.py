"""The dashboard's inline SVG charts: well-formed, to scale, escaped, robust to bad numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from engine.measure import svg

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # raises on anything that is not well-formed XML


def bars(root: ET.Element) -> list[float]:
    return [float(r.attrib["width"]) for r in root.iterfind(".//s:rect", NS)]


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iterfind(".//s:g/s:text", NS)]


def test_funnel_bars_are_to_scale_with_counts_and_shares() -> None:
    stages = [("started", 200), ("sends", 100), ("delivered", 50), ("converted", 0)]
    root = parse(svg.funnel(stages, title="Funnel of cart", width=420))
    widths = bars(root)
    assert len(widths) == 4
    assert widths[0] == 420 - 78 - 96  # the largest stage fills the plot
    assert widths[1] == widths[0] / 2 and widths[2] == widths[0] / 4 and widths[3] == 0
    labels = texts(root)
    assert labels[0::2] == ["started", "sends", "delivered", "converted"]
    assert labels[1::2] == ["200", "100 · 50%", "50 · 25%", "0 · 0%"]
    assert root.find("s:title", NS) is not None
    assert root.attrib["aria-label"] == "Funnel of cart"


def test_funnel_shares_can_be_of_a_later_stage() -> None:
    stages = [("started", 2), ("sends", 4), ("delivered", 3), ("clicked", 1)]
    labels = texts(parse(svg.funnel(stages, title="t", share_of=1)))
    assert labels[1::2] == ["2", "4", "3 · 75%", "1 · 25%"]


def test_funnel_survives_zeros_bad_numbers_and_hostile_labels() -> None:
    stages = [("<script>x</script>", 0), ("nan", float("nan")), ("neg", -5), ("inf", 1e400)]
    markup = svg.funnel(stages, title='"><script>alert(1)</script>')
    assert "<script>" not in markup
    root = parse(markup)
    assert bars(root) == [0, 0, 0, 0]
    assert texts(root)[0] == "<script>x</script>"  # escaped in the markup, intact as text
    assert root.find("s:title", NS).text == '"><script>alert(1)</script>'  # type: ignore[union-attr]


def test_funnel_tiny_but_nonzero_counts_stay_visible() -> None:
    root = parse(svg.funnel([("started", 1_000_000), ("converted", 1)], title="t"))
    assert bars(root)[1] == 1.0
    assert texts(root)[1] == "1\u202f000\u202f000"  # thousands grouped for reading


def test_funnel_of_no_stages_is_an_empty_chart() -> None:
    root = parse(svg.funnel([], title="nothing"))
    assert bars(root) == []


def _circles(root: ET.Element) -> list[ET.Element]:
    return list(root.iterfind(".//s:circle", NS))


def test_lift_plot_places_lifts_around_zero_with_intervals() -> None:
    rows = [("B", 0.02, [0.01, 0.03]), ("C", -0.01, [-0.03, 0.01]), ("D", None, None)]
    root = parse(svg.lift_plot(rows, title="conversion lift over A", width=420))
    zero_line = root.find("s:line", NS)
    assert zero_line is not None
    zero = float(zero_line.attrib["x1"])
    circles = _circles(root)
    assert len(circles) == 2  # D has no defined lift: no dot
    b, c = (float(x.attrib["cx"]) for x in circles)
    assert c < zero < b
    assert abs((b - zero) - 2 * (zero - c)) < 0.2  # +2 points is twice as far as -1 point
    # A lift whose whole interval is above zero is green; one that spans zero is grey.
    assert circles[0].attrib["fill"] == svg.GOOD
    assert circles[1].attrib["fill"] == svg.MUTED
    whiskers = root.findall("s:line", NS)[1:]
    assert len(whiskers) == 2
    assert float(whiskers[0].attrib["x1"]) < b < float(whiskers[0].attrib["x2"])


def test_lift_plot_significantly_worse_is_red_and_bad_numbers_are_clamped() -> None:
    rows = [("B", -0.05, [-0.08, -0.02]), ("<C>", float("inf"), [float("-inf"), 7.0])]
    markup = svg.lift_plot(rows, title="t")
    assert "<C>" not in markup
    root = parse(markup)
    assert _circles(root)[0].attrib["fill"] == svg.BAD
    width = float(root.attrib["width"])
    for element in root.iter():
        for attr in ("cx", "x1", "x2"):
            if attr in element.attrib:
                assert 0 <= float(element.attrib[attr]) <= width
