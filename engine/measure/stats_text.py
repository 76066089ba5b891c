"""The stats JSON as a terminal report (`kaskad stats`): aligned tables per rule."""

from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max([len(h), *(len(r[n]) for r in rows)]) for n, h in enumerate(header)]
    # Names left, numbers right.
    left = {
        n
        for n, h in enumerate(header)
        if h in ("STEP", "NAME", "CHANNEL", "VARIANT", "SKIPS", "GROUP")
    }

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if n in left else c.rjust(w)
            for n, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(out)).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _skips(skips: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(skips.items(), key=lambda kv: -kv[1])) or "-"


def _funnel_cells(row: dict[str, Any]) -> list[str]:
    return [
        str(row["sends"]),
        str(row["skipped"]),
        str(row["delivered"]),
        str(row["opened"]),
        str(row["clicked"]),
        str(row["converted"]),
        _money(row["revenue"]),
        _skips(row["skips"]),
    ]


_FUNNEL = ["SENDS", "SKIPPED", "DELIVERED", "OPENED", "CLICKED", "CONVERTED", "REVENUE", "SKIPS"]


def _short(name: str, limit: int = 32) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _metric_cells(m: dict[str, Any]) -> list[str]:
    ci = m["ci95"]
    return [
        _pct(m["rate"]),
        f"{m['lift_abs'] * 100:+.1f} pt",
        "-" if m["p_value"] is None else f"{m['p_value']:.3f}",
        "-" if ci is None else f"[{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]",
    ]


def _ab_lines(r: dict[str, Any]) -> list[str]:
    ab = r["ab"]
    base = ab["baseline"]
    versus = {v["variant"]: v for v in ab["variants"]}
    first = ab["variants"][0] if ab["variants"] else None
    rows = []
    for row in r["variants"]:
        name, v = row["variant"], versus.get(row["variant"])
        if v is not None:
            cells = [*_metric_cells(v["conversion"]), *_metric_cells(v["clicks"])]
        else:  # the baseline: its own rates only
            conv = _pct(first["conversion"]["baseline_rate"]) if first else "-"
            clicks = _pct(first["clicks"]["baseline_rate"]) if first else "-"
            cells = [conv, "", "", "", clicks, "", "", ""]
        rows.append([f"{name} (base)" if name == base else name, str(row["users"]), *cells])
    header = ["VARIANT", "USERS", "CONV", "LIFT", "P", "CI95 (pt)"]
    header += ["CLICKS", "LIFT", "P", "CI95 (pt)"]
    return [
        f"  A/B, baseline {base}, at least {ab['min_sample']} users per variant",
        *_table(header, rows),
        f"  verdict: {ab['verdict']}",
    ]


def _holdout_lines(h: dict[str, Any], title: str, indent: str = "  ") -> list[str]:
    """A holdout block: both groups, the lift and what it is worth, the verdict."""
    share = "" if h["share"] is None else f" {h['share']:g}%"
    head = (
        f"{indent}{title}{share}, converted by {h['converted_by']}, "
        f"at least {h['min_sample']} users per group"
    )
    rows = [
        [
            name,
            str(g["users"]),
            str(g["converted"]),
            _pct(g["rate"]),
            _money(g["revenue"]),
            _money(g["revenue_per_user"]),
        ]
        for name, g in (("treatment", h["treatment"]), ("holdout", h["holdout"]))
    ]
    header = ["GROUP", "USERS", "CONVERTED", "CONV", "REVENUE", "REV/USER"]
    ci, p = h["ci95"], h["p_value"]
    rel = "" if h["lift_rel"] is None else f" ({h['lift_rel'] * 100:+.0f}%)"
    lift = f"{indent}lift {h['lift_abs'] * 100:+.1f} pp{rel}"
    lift += "" if ci is None else f", 95% CI [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}] pp"
    lift += "" if p is None else f", p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}"
    if h["incremental_conversions"] is not None:
        lift += (
            f"; incremental: {h['incremental_conversions']:+.1f} conversions, "
            f"revenue {h['incremental_revenue']:+,.2f}"
        )
    return [head, *_table(header, rows, indent), lift, f"{indent}verdict: {h['verdict']}"]


def format_text(stats: dict[str, Any]) -> str:
    """The stats JSON as aligned tables, one block per rule."""
    rng = f"{stats['since'] or 'the start'} to {stats['until'] or 'now'}"
    a, o = stats["attribution"], stats["orders"]
    src = o["by_source"]
    out = [
        f"kaskad stats, {rng} (generated {stats['generated_at']})",
        f"attribution: the last {a['touch']} within {a['window']} before the order",
        f"orders: {o['count']} (online {src['online']['count']}, offline "
        f"{src['offline']['count']}), revenue {_money(o['revenue'])}; attributed "
        f"{o['attributed']}, revenue {_money(o['attributed_revenue'])}",
    ]
    quiet: list[str] = []
    for r in stats["rules"]:
        inst, funnel = r["instances"], r["funnel"]
        if not inst["started"] and not r["steps"] and not funnel["converted"]:
            quiet.append(r["rule"] if r["state"] == "active" else f"{r['rule']} ({r['state']})")
            continue
        title = r["rule"] if r["name"] == r["rule"] else f"{r['rule']}: {r['name']}"
        out += ["", f"{title}  [{r['state']}]"]
        out.append("  instances: " + ", ".join(f"{k} {v}" for k, v in inst.items()))
        rows = [["all", "", "", "", *_funnel_cells({**funnel, "skips": r["skips"]})]]
        rows += [
            [
                s["step"],
                _short(s.get("name", s["step"])),
                s["channel"] or "-",
                s["variant"] or "-",
                *_funnel_cells(s),
            ]
            for s in r["steps"]
        ]
        out += _table(["STEP", "NAME", "CHANNEL", "VARIANT", *_FUNNEL], rows)
        out += _table(
            ["CHANNEL", *_FUNNEL], [[c["channel"] or "-", *_funnel_cells(c)] for c in r["channels"]]
        )
        if r["ab"] is not None:
            out += _ab_lines(r)
        if r.get("holdout") is not None:
            out += _holdout_lines(r["holdout"], "holdout")
    if quiet:
        out += ["", "no data in range: " + ", ".join(quiet)]
    if stats.get("global_holdout") is not None:
        out += ["", "global holdout: everyone else against the users kept out of marketing"]
        out += _holdout_lines(stats["global_holdout"], "global holdout")
    return "\n".join(out) + "\n"
