"""Event datasets for kaskad benchmarks and replay tests.

Every source produces kaskad event envelopes, keys in the order id, type, user_id, time, data:

* :func:`otto_events` converts the OTTO recsys session fixture (CC BY 4.0, attribution to OTTO).
* :func:`rees46_events` converts the REES46 multi-category-store sample. That file has no
  redistribution licence: never commit it or anything derived from it.
* :func:`generate_stream` yields a synthetic stream of any size, shaped like the two samples.

Neither real dataset has contact data, and OTTO has no prices or names, so profiles (and OTTO
prices/names) are synthetic; profiles say so in ``attributes.synthetic``.

CLI (compact JSON, one event per line)::

    python -m bench.datasets otto INPUT [--no-profiles] > out.jsonl
    python -m bench.datasets rees46 INPUT [--no-profiles] > out.jsonl
    python -m bench.datasets generate N --users U --days D --seed S > out.jsonl
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import heapq
import itertools
import json
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Final, TextIO

Event = dict[str, Any]
# (epoch seconds, user order, original order): ties in time keep users and rows in input order.
_SortKey = tuple[int, int, int]

PRODUCT_URL: Final = "https://shop.example/p/{}"

# --------------------------------------------------------------------------------- shared helpers


def iso_time(epoch_s: int) -> str:
    """Whole seconds since the epoch -> ISO 8601 UTC ending in ``Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _envelope(
    event_id: str, event_type: str, user_id: str | None, epoch_s: int, data: dict[str, Any]
) -> Event:
    # Insertion order is the output key order: id, type, user_id, time, data.
    event: Event = {"id": event_id, "type": event_type}
    if user_id is not None:
        event["user_id"] = user_id
    event["time"] = iso_time(epoch_s)
    event["data"] = data
    return event


def _in_time_order(keyed: list[tuple[_SortKey, Event]]) -> list[Event]:
    keyed.sort(key=lambda pair: pair[0])
    return [event for _, event in keyed]


def _items_total(items: Iterable[dict[str, Any]]) -> float:
    total: float = sum(item["price"] * item["qty"] for item in items)
    return round(total, 2)


def _order_items(products: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order rows -> line items; the same product twice in one order becomes qty 2."""
    lines: dict[str, dict[str, Any]] = {}
    for product in products:
        line = lines.setdefault(product["product_id"], {**product, "qty": 0})
        line["qty"] += 1
    return list(lines.values())


class _RunningCart:
    """One user's cart rebuilt from add-to-cart rows: carting a product again bumps its qty.

    Products are item-shaped dicts: product_id, name, url, price.
    """

    def __init__(self) -> None:
        self._lines: dict[str, dict[str, Any]] = {}

    def add(self, product: dict[str, Any]) -> None:
        line = self._lines.get(product["product_id"])
        if line is None:
            self._lines[product["product_id"]] = {**product, "qty": 1}
        else:
            line["qty"] += 1
            line["price"] = product["price"]  # the shop charges the latest price

    def remove(self, product_ids: Iterable[str]) -> None:
        for product_id in product_ids:
            self._lines.pop(product_id, None)

    def snapshot(self) -> dict[str, Any]:
        """cart.updated data: the whole cart after the change."""
        items = [dict(line) for line in self._lines.values()]
        return {"items": items, "total": _items_total(items)}


def synthetic_profile(user_id: str, ordinal: int, *, timezone: str, locale: str) -> dict[str, Any]:
    """profile.updated data for a made-up but reachable user (no dataset has contact data).

    ``ordinal`` is the user's 1-based position in the input: everyone gets an email, every 3rd
    user a phone and every 2nd a push token, so channel cascades meet all combinations.
    """
    phone = f"+49151{ordinal:07d}" if ordinal % 3 == 0 else None
    push_tokens = [f"push-{user_id}"] if ordinal % 2 == 0 else []
    data: dict[str, Any] = {"email": f"{user_id}@example.test"}
    if phone is not None:
        data["phone"] = phone
    data["push_tokens"] = push_tokens
    data["timezone"] = timezone
    data["locale"] = locale
    data["consent"] = {"email": True, "sms": phone is not None, "push": bool(push_tokens)}
    data["attributes"] = {"synthetic": True}
    return data


def _profile_entry(
    user_id: str, ordinal: int, user_order: int, first_epoch: int, timezone: str, locale: str
) -> tuple[_SortKey, Event]:
    # One second before the user's first event, so rules see a reachable user from the start.
    epoch = first_epoch - 1
    data = synthetic_profile(user_id, ordinal, timezone=timezone, locale=locale)
    event = _envelope(f"{user_id}-profile", "profile.updated", user_id, epoch, data)
    return (epoch, user_order, -1), event


# ------------------------------------------------------------------------------------------ OTTO


def otto_events(path: Path, *, with_profiles: bool = True) -> list[Event]:
    """Convert the OTTO recsys session fixture (one session per line) to kaskad events.

    A session is a user ``otto-<session>``. clicks -> product.viewed, carts -> cart.updated with
    the running cart, orders -> order.created (rows with the same ts are one order; ordered
    articles leave the cart). Ids are ``otto-<session>-<row index>`` (an order takes the index
    of its first row; a profile is ``otto-<session>-profile``). Times are truncated to seconds.
    """
    keyed: list[tuple[_SortKey, Event]] = []
    with path.open(encoding="utf-8") as lines:
        sessions = [json.loads(line) for line in lines if line.strip()]
    for user_order, session in enumerate(sessions):
        user_id = f"otto-{session['session']}"
        rows: list[dict[str, Any]] = session["events"]
        if with_profiles and rows:
            first_epoch = min(row["ts"] for row in rows) // 1000
            ordinal = user_order + 1
            entry = _profile_entry(user_id, ordinal, user_order, first_epoch, "Europe/Berlin", "de")
            keyed.append(entry)
        for (epoch, index), event in _otto_session_events(user_id, rows):
            keyed.append(((epoch, user_order, index), event))
    return _in_time_order(keyed)


def otto_product(aid: int) -> dict[str, Any]:
    """OTTO has no names or prices: both are synthetic, but stable per article id."""
    return {
        "product_id": str(aid),
        "name": f"Article {aid}",
        "url": PRODUCT_URL.format(aid),
        "price": float(5 + aid % 200),
    }


def _otto_order_groups(rows: Sequence[dict[str, Any]]) -> dict[int, list[int]]:
    """Order rows sharing a ts form one order: index of its first row -> all its row indices."""
    by_ts: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        if row["type"] == "orders":
            by_ts.setdefault(row["ts"], []).append(index)
    return {group[0]: group for group in by_ts.values()}


def _otto_session_events(
    user_id: str, rows: Sequence[dict[str, Any]]
) -> Iterator[tuple[tuple[int, int], Event]]:
    """One session's rows -> ((epoch, row index), event), in row order."""
    orders = _otto_order_groups(rows)
    cart = _RunningCart()
    order_no = 0
    for index, row in enumerate(rows):
        epoch = row["ts"] // 1000
        event_id = f"{user_id}-{index}"
        kind = row["type"]
        if kind == "clicks":
            data = {**otto_product(row["aid"]), "category": None}
            yield (epoch, index), _envelope(event_id, "product.viewed", user_id, epoch, data)
        elif kind == "carts":
            cart.add(otto_product(row["aid"]))
            yield (
                (epoch, index),
                _envelope(event_id, "cart.updated", user_id, epoch, cart.snapshot()),
            )
        elif kind == "orders":
            if index not in orders:
                continue  # a later row of an order that was emitted at its first row
            items = _order_items(otto_product(rows[i]["aid"]) for i in orders[index])
            cart.remove(item["product_id"] for item in items)
            order_no += 1
            data = _order_data(f"{user_id}-o{order_no}", items)
            yield (epoch, index), _envelope(event_id, "order.created", user_id, epoch, data)
        else:
            raise ValueError(f"{user_id}: unknown OTTO event type {kind!r}")


def _order_data(order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"order_id": order_id, "total": _items_total(items), "items": items, "source": "online"}


# ---------------------------------------------------------------------------------------- REES46

_REES46_COLUMNS: Final = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)


@dataclass(frozen=True, slots=True)
class _Rees46Row:
    index: int
    raw: str
    epoch: int
    kind: str
    product_id: str
    category_code: str
    brand: str
    price: float
    user_id: str  # already prefixed: r46-<user_id>
    session: str


def rees46_events(path: Path, *, with_profiles: bool = True) -> list[Event]:
    """Convert the REES46 multi-category-store CSV sample to kaskad events (never commit them).

    view -> product.viewed, cart -> cart.updated with the running cart, purchase rows grouped by
    (user, session, second) -> one order.created with a made-up order_id; purchased products
    leave the cart. Ids hash the raw CSV line, so the exact duplicate rows of the source come out
    as events with duplicate ids (the engine deduplicates by id); their data repeats the first
    copy and they do not touch the running cart again.
    """
    rows = _read_rees46(path)
    user_order: dict[str, int] = {}
    first_epoch: dict[str, int] = {}
    for row in rows:
        user_order.setdefault(row.user_id, len(user_order))
        first_epoch.setdefault(row.user_id, row.epoch)
    keyed = [
        ((row.epoch, user_order[row.user_id], row.index), event)
        for row, event in _rees46_row_events(rows)
    ]
    if with_profiles:
        for user_id, order in user_order.items():
            keyed.append(
                _profile_entry(
                    user_id, order + 1, order, first_epoch[user_id], "Europe/Moscow", "ru"
                )
            )
    return _in_time_order(keyed)


def _read_rees46(path: Path) -> list[_Rees46Row]:
    with path.open(encoding="utf-8", newline="") as lines:
        raw_lines = [line.rstrip("\r\n") for line in lines]
    if not raw_lines or tuple(raw_lines[0].split(",")) != _REES46_COLUMNS:
        raise ValueError(f"{path}: not a REES46 events CSV (unexpected header)")
    return [_parse_rees46(index, raw) for index, raw in enumerate(raw_lines[1:]) if raw]


def _parse_rees46(index: int, raw: str) -> _Rees46Row:
    fields = dict(zip(_REES46_COLUMNS, next(csv.reader([raw])), strict=True))
    return _Rees46Row(
        index=index,
        raw=raw,
        epoch=_rees46_epoch(fields["event_time"]),
        kind=fields["event_type"],
        product_id=fields["product_id"],
        category_code=fields["category_code"],
        brand=fields["brand"],
        price=float(fields["price"]),
        user_id=f"r46-{fields['user_id']}",
        session=fields["user_session"],
    )


@lru_cache(maxsize=4096)
def _rees46_epoch(text: str) -> int:
    # Documented as UTC; thousands of rows share each second, hence the cache.
    parsed = datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _line_id(*raw_lines: str) -> str:
    digest = hashlib.blake2b("\n".join(raw_lines).encode(), digest_size=8).hexdigest()
    return f"r46-{digest}"


def _rees46_product(row: _Rees46Row) -> dict[str, Any]:
    # No product names in REES46: brand + the most specific category level reads like one.
    kind = row.category_code.rsplit(".", 1)[-1].replace("_", " ")
    name = " ".join(part for part in (row.brand.capitalize(), kind) if part)
    return {
        "product_id": row.product_id,
        "name": name or f"Product {row.product_id}",
        "url": PRODUCT_URL.format(row.product_id),
        "price": row.price,
    }


def _duplicate_of(rows: Sequence[_Rees46Row]) -> dict[int, int]:
    """Row index -> index of the first identical row, for exact duplicates only."""
    first: dict[str, int] = {}
    duplicates: dict[int, int] = {}
    for row in rows:
        original = first.setdefault(row.raw, row.index)
        if original != row.index:
            duplicates[row.index] = original
    return duplicates


def _rees46_orders(
    rows: Sequence[_Rees46Row], duplicates: dict[int, int]
) -> dict[int, list[_Rees46Row]]:
    """Purchase rows of one (user, session, second) are one order: first row index -> rows."""
    groups: dict[tuple[str, str, int], list[_Rees46Row]] = {}
    for row in rows:
        if row.kind == "purchase" and row.index not in duplicates:
            groups.setdefault((row.user_id, row.session, row.epoch), []).append(row)
    return {group[0].index: group for group in groups.values()}


def _rees46_row_events(rows: Sequence[_Rees46Row]) -> Iterator[tuple[_Rees46Row, Event]]:
    duplicates = _duplicate_of(rows)
    orders = _rees46_orders(rows, duplicates)
    carts: dict[str, _RunningCart] = {}
    order_counts: Counter[str] = Counter()
    by_index: dict[int, Event] = {}  # row index -> the event that row became (for duplicates)
    for row in rows:
        if row.index in duplicates:
            yield row, copy.deepcopy(by_index[duplicates[row.index]])
            continue
        event_id = _line_id(row.raw)
        if row.kind == "view":
            data = {**_rees46_product(row), "category": row.category_code or None}
            event = _envelope(event_id, "product.viewed", row.user_id, row.epoch, data)
        elif row.kind == "cart":
            cart = carts.setdefault(row.user_id, _RunningCart())
            cart.add(_rees46_product(row))
            event = _envelope(event_id, "cart.updated", row.user_id, row.epoch, cart.snapshot())
        elif row.kind == "purchase":
            group = orders.get(row.index)
            if group is None:
                continue  # a later row of an order already emitted at its first row
            order_counts[row.user_id] += 1
            event = _rees46_order(group, order_counts[row.user_id], carts.get(row.user_id))
            by_index.update((member.index, event) for member in group)
        else:
            raise ValueError(f"REES46 row {row.index + 2}: unknown event_type {row.kind!r}")
        by_index[row.index] = event
        yield row, event


def _rees46_order(group: list[_Rees46Row], order_no: int, cart: _RunningCart | None) -> Event:
    first = group[0]
    items = _order_items(_rees46_product(row) for row in group)
    if cart is not None:
        cart.remove(item["product_id"] for item in items)
    data = _order_data(f"{first.user_id}-o{order_no}", items)
    event_id = _line_id(*(row.raw for row in group))
    return _envelope(event_id, "order.created", first.user_id, first.epoch, data)


# ------------------------------------------------------------------------------ synthetic stream

# Activity mix in per mille of non-profile events (sums to 998: "roughly" the target mix).
_VIEWS_PER_MILLE: Final = 950
_OTHER_MIX: Final = (
    ("search.performed", 15),
    ("cart.updated", 15),
    ("favorite.added", 5),
    ("order.created", 10),
    ("cart.cleared", 2),
    ("product.price_dropped", 1),
)
_VIEW_SHARE: Final = _VIEWS_PER_MILLE / (_VIEWS_PER_MILLE + sum(n for _, n in _OTHER_MIX))
_CATALOGUE_SIZE: Final = 5_000
_ZIPF_EXPONENT: Final = 1.05
_PICK_BITS: Final = 18  # 262,144-slot rank table: even the rarest product gets a few slots
_MEAN_SESSION_EVENTS: Final = 8.0
_MEAN_GAP_S: Final = 40.0
_GAP_BITS: Final = 16
# Relative activity per UTC hour of day: quiet nights, evening peak (European shop).
_HOURLY_ACTIVITY: Final = (
    *(3, 2, 1, 1, 1, 2),  # 00-05
    *(4, 6, 8, 9, 9, 10),  # 06-11
    *(10, 10, 10, 10, 11, 12),  # 12-17
    *(14, 16, 17, 15, 10, 6),  # 18-23
)
_CATEGORIES: Final = (
    "electronics.smartphone",
    "electronics.audio.headphone",
    "computers.notebook",
    "appliances.kitchen.kettle",
    "appliances.environment.vacuum",
    "furniture.living_room.sofa",
    "apparel.shoes",
    "kids.toys",
    None,  # like REES46, a share of products has no category
)
_BRANDS: Final = ("Acme", "Nordlicht", "Kiwi", "Orbit", "Vega", "Lumen", "Taiga")
_QUERIES: Final = ("sofa", "headphones", "kettle", "running shoes", "lego", "iphone case", "vacuum")
_LOCALES: Final = (("Europe/Berlin", "de"), ("Europe/Moscow", "ru"), ("Europe/London", "en"))


def generate_stream(
    n_events: int, *, n_users: int, days: float, seed: int, start: str = "2026-11-02T00:00:00Z"
) -> Iterator[Event]:
    """Yield ``n_events`` synthetic events, non-decreasing in time, deterministic for ``seed``.

    Sessions of activity are spread over ``days`` from ``start`` (busier in the evening); each
    user's first session opens with their profile.updated. Products come from a Zipf-skewed
    catalogue of 5,000. The stream is produced lazily: memory holds the catalogue, the open
    sessions and the carts, never the events.
    """
    if n_events < 0 or n_users < 1 or days <= 0:
        raise ValueError("need n_events >= 0, n_users >= 1 and days > 0")
    return _SyntheticShop(n_users=n_users, days=days, seed=seed, start=start).stream(n_events)


class _Session:
    __slots__ = ("last_product", "profile_due", "remaining", "user", "user_id")

    def __init__(self, user: int, remaining: int, last_product: int, profile_due: bool) -> None:
        self.user = user
        self.user_id = f"syn-u{user}"
        self.remaining = remaining  # events still to emit, the profile included
        self.last_product = last_product  # what cart/favourite/buy-now act on
        self.profile_due = profile_due


class _DayPrefixes(dict[int, str]):
    """Day number since the epoch -> "YYYY-MM-DDT", computed once per day on first use."""

    def __missing__(self, day: int) -> str:
        prefix = self[day] = iso_time(day * 86400)[:11]
        return prefix


@cache
def _hms_table() -> tuple[str, ...]:
    """Second of the day -> "HH:MM:SSZ": formatting by lookup is far cheaper than strftime."""
    return tuple(
        f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60)
    )


@cache
def _gap_table() -> tuple[float, ...]:
    """Exponential gaps between a session's events, as 2**16 quantiles (one lookup per gap)."""
    size = 1 << _GAP_BITS
    return tuple(-_MEAN_GAP_S * math.log(1.0 - (i + 0.5) / size) for i in range(size))


class _ActivityCurve:
    """Maps a fraction of the event budget to a time; busy hours get more of the budget."""

    def __init__(self, start: float, span_s: float) -> None:
        hours = max(1, math.ceil(span_s / 3600))
        self._start = start
        self._widths = [min(3600.0, span_s - hour * 3600) for hour in range(hours)]
        weights = [
            _HOURLY_ACTIVITY[int(start // 3600 + hour) % 24] * width
            for hour, width in enumerate(self._widths)
        ]
        total = sum(weights)
        self._ends = list(itertools.accumulate(weight / total for weight in weights))
        self._hour = 0

    def time_at(self, fraction: float) -> float:
        # Fractions only grow, so walking on from the last hour is amortised O(1).
        hour, ends = self._hour, self._ends
        while hour < len(ends) - 1 and ends[hour] <= fraction:
            hour += 1
        self._hour = hour
        begin = ends[hour - 1] if hour else 0.0
        within = min(1.0, (fraction - begin) / (ends[hour] - begin))
        return self._start + hour * 3600 + within * self._widths[hour]


def _catalogue(rng: random.Random) -> tuple[list[dict[str, Any]], list[float]]:
    """product.viewed data templates by popularity rank, and the list prices."""
    views: list[dict[str, Any]] = []
    list_prices: list[float] = []
    for number in rng.sample(range(1_000_000, 10_000_000), _CATALOGUE_SIZE):
        # Log-normal prices, median ~37, like a general store (REES46 spans 0.8 to 2,600).
        price = round(min(5000.0, max(0.99, math.exp(rng.gauss(3.6, 1.1)))), 2)
        category = rng.choice(_CATEGORIES)
        kind = category.rsplit(".", 1)[-1].replace("_", " ") if category else "item"
        name = f"{rng.choice(_BRANDS)} {kind} {number % 1000}"
        url = PRODUCT_URL.format(number)
        views.append(
            {
                "product_id": str(number),
                "name": name,
                "url": url,
                "price": price,
                "category": category,
            }
        )
        list_prices.append(price)
    return views, list_prices


def _zipf_table(n_products: int) -> list[int]:
    """A table of ranks where rank r fills a share ~ 1/(r+1)^s: uniform slot -> skewed rank."""
    size = 1 << _PICK_BITS
    weights = [1.0 / (rank + 1) ** _ZIPF_EXPONENT for rank in range(n_products)]
    scale = size / sum(weights)
    table: list[int] = []
    cumulative = 0.0
    for rank, weight in enumerate(weights):
        cumulative += weight * scale
        table.extend([rank] * (round(cumulative) - len(table)))
    table.extend([n_products - 1] * (size - len(table)))  # float rounding at the very end
    return table[:size]


class _SyntheticShop:
    """State behind :func:`generate_stream`: catalogue, carts, and the session heap."""

    def __init__(self, *, n_users: int, days: float, seed: int, start: str) -> None:
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._bits = self._rng.getrandbits
        self._n_users = n_users
        self._prefix = f"syn{seed}-"
        self._curve = _ActivityCurve(_parse_utc(start), days * 86400)
        self._views, self._list_prices = _catalogue(self._rng)
        self._pick = _zipf_table(len(self._views))
        self._other_kinds = tuple(kind for kind, weight in _OTHER_MIX for _ in range(weight))
        self._seen = bytearray(n_users)
        self._carts: dict[int, dict[int, int]] = {}  # user -> product rank -> qty
        self._allocated = 0  # events promised to sessions opened so far
        self._orders = 0
        self._activity: dict[str, Callable[[_Session], dict[str, Any]]] = {
            "search.performed": self._search,
            "cart.updated": self._cart_add,
            "favorite.added": self._favorite,
            "order.created": self._order,
            "cart.cleared": self._cart_clear,
        }

    def stream(self, n_events: int) -> Iterator[Event]:
        """Merge session openings (made in time order) with a heap of open sessions keyed by
        their next event time: events come out in global time order.

        This is the hot loop, so it binds everything to locals and builds product views (95%
        of events) inline; everything rarer goes through :meth:`_other_event`.
        """
        heap: list[tuple[float, int, _Session]] = []
        opened = itertools.count()
        upcoming = self._open_session(n_events)
        next_open = upcoming[0] if upcoming else math.inf
        rand, bits, pick, views = self._random, self._bits, self._pick, self._views
        gaps, days, hms, prefix = _gap_table(), _DayPrefixes(), _hms_table(), self._prefix
        heappush, heapreplace, heappop = heapq.heappush, heapq.heapreplace, heapq.heappop
        view_share, pick_bits, gap_bits = _VIEW_SHARE, _PICK_BITS, _GAP_BITS
        for emitted in itertools.count(1):
            while not heap or next_open <= heap[0][0]:
                if upcoming is None:
                    return  # no open session and none to come: the budget is spent
                heappush(heap, (next_open, next(opened), upcoming[1]))
                upcoming = self._open_session(n_events)
                next_open = upcoming[0] if upcoming else math.inf
            at, order, session = heap[0]
            event_id = prefix + str(emitted)
            day, second = divmod(int(at), 86400)
            time = days[day] + hms[second]
            if session.profile_due or rand() >= view_share:
                yield self._other_event(session, event_id, time)
            else:
                product = pick[bits(pick_bits)]
                session.last_product = product
                data = views[product].copy()
                yield {
                    "id": event_id,
                    "type": "product.viewed",
                    "user_id": session.user_id,
                    "time": time,
                    "data": data,
                }
            if session.remaining > 1:
                session.remaining -= 1
                heapreplace(heap, (at + gaps[bits(gap_bits)], order, session))
            else:
                heappop(heap)

    def _open_session(self, n_events: int) -> tuple[float, _Session] | None:
        left = n_events - self._allocated
        if left <= 0:
            return None
        rng = self._rng
        user = rng.randrange(self._n_users)
        new_user = not self._seen[user]
        self._seen[user] = 1
        activity = 1 + int(rng.expovariate(1.0 / (_MEAN_SESSION_EVENTS - 1)))
        size = min(left, activity + new_user)
        # Place the session at the time where this share of the event budget is reached, so
        # sessions (and events) fill the whole span whatever n_events is.
        start = self._curve.time_at((self._allocated + rng.random() * size) / n_events)
        self._allocated += size
        product = self._pick[self._bits(_PICK_BITS)]
        return start, _Session(user, size, product, new_user)

    def _other_event(self, session: _Session, event_id: str, time: str) -> Event:
        """Everything but a product view: the profile that opens a user's first session, or
        an activity drawn from the non-view mix."""
        if session.profile_due:
            session.profile_due = False
            kind, data = "profile.updated", self._profile(session.user)
        else:
            kind = self._other_kinds[int(self._random() * len(self._other_kinds))]
            if kind == "product.price_dropped":  # a product event: no user_id
                return {"id": event_id, "type": kind, "time": time, "data": self._price_drop()}
            data = self._activity[kind](session)
        return {
            "id": event_id,
            "type": kind,
            "user_id": session.user_id,
            "time": time,
            "data": data,
        }

    def _profile(self, user: int) -> dict[str, Any]:
        timezone, locale = _LOCALES[user % len(_LOCALES)]
        data = synthetic_profile(f"syn-u{user}", user + 1, timezone=timezone, locale=locale)
        if user % 5 == 4:  # some web-push subscribers too
            keys = {"p256dh": f"BP{user:020d}", "auth": f"au{user:010d}"}
            data["webpush"] = [{"endpoint": f"https://push.example/sub/{user}", "keys": keys}]
        return data

    def _search(self, session: _Session) -> dict[str, Any]:
        return {"query": self._rng.choice(_QUERIES), "results": self._rng.randrange(0, 120)}

    def _cart_add(self, session: _Session) -> dict[str, Any]:
        cart = self._carts.setdefault(session.user, {})
        cart[session.last_product] = cart.get(session.last_product, 0) + 1
        items = self._line_items(cart)
        return {"items": items, "total": _items_total(items)}

    def _favorite(self, session: _Session) -> dict[str, Any]:
        return {"product_id": self._views[session.last_product]["product_id"]}

    def _order(self, session: _Session) -> dict[str, Any]:
        # With an empty cart it is a "buy now" of the last product seen (REES46 has many).
        cart = self._carts.pop(session.user, None) or {session.last_product: 1}
        self._orders += 1
        return _order_data(f"{self._prefix}o{self._orders}", self._line_items(cart))

    def _cart_clear(self, session: _Session) -> dict[str, Any]:
        self._carts.pop(session.user, None)
        return {}

    def _line_items(self, cart: dict[int, int]) -> list[dict[str, Any]]:
        items = []
        for product, qty in cart.items():
            view = self._views[product]
            items.append(
                {
                    "product_id": view["product_id"],
                    "name": view["name"],
                    "url": view["url"],
                    "price": view["price"],
                    "qty": qty,
                }
            )
        return items

    def _price_drop(self) -> dict[str, Any]:
        product = self._pick[self._bits(_PICK_BITS)]
        view, list_price = self._views[product], self._list_prices[product]
        if view["price"] < 0.75 * list_price:
            # A long sale ends (unannounced) so repeated drops cannot grind a price to zero.
            view["price"] = list_price
        old_price = view["price"]
        view["price"] = round(old_price * self._rng.uniform(0.8, 0.95), 2)
        return {
            "product_id": view["product_id"],
            "old_price": old_price,
            "new_price": view["price"],
            "name": view["name"],
            "url": view["url"],
        }


def _parse_utc(text: str) -> float:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"start time needs a timezone (e.g. a trailing Z): {text!r}")
    return parsed.timestamp()


# ------------------------------------------------------------------------------------------- CLI


def write_jsonl(events: Iterable[Event], out: TextIO) -> None:
    """Compact JSON, one event per line; dict order gives id, type, user_id, time, data."""
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    out.writelines(encode(event) + "\n" for event in events)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.datasets", description="kaskad event datasets as JSON lines"
    )
    sources = parser.add_subparsers(dest="source", required=True)
    for name in ("otto", "rees46"):
        convert = sources.add_parser(name, help=f"convert the {name.upper()} sample")
        convert.add_argument("input", type=Path)
        convert.add_argument("--no-profiles", action="store_true", help="no profile.updated")
    generate = sources.add_parser("generate", help="synthetic stream")
    generate.add_argument("n_events", type=int)
    generate.add_argument("--users", type=int, required=True)
    generate.add_argument("--days", type=float, required=True)
    generate.add_argument("--seed", type=int, required=True)
    generate.add_argument("--start", default="2026-11-02T00:00:00Z")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    events: Iterable[Event]
    if args.source == "otto":
        events = otto_events(args.input, with_profiles=not args.no_profiles)
    elif args.source == "rees46":
        events = rees46_events(args.input, with_profiles=not args.no_profiles)
    else:
        events = generate_stream(
            args.n_events, n_users=args.users, days=args.days, seed=args.seed, start=args.start
        )
    try:
        write_jsonl(events, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # `... | head` closed the pipe: stop quietly, and keep the exit-time flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
