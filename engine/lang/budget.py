"""Render limits: whatever a template or expression says, rendering it ends quickly.

Rendering runs on the event loop, so a template that loops 10^10 times or builds a gigabyte
string would stop the daemon. The sandbox (engine/lang/sandbox.py) calls in here at every
place where work or size can grow: each loop iteration, each `+ * ** %`, each call of a
method or macro, each join of output, and the filters that take a size. Every limit is per
render (one field of a message, or one expression), except the output one, which holds for
every string and list built along the way as well.

Without a render under way (a fast-path expression) only the per-value checks apply: there
is no loop, and no state to keep. Constant folding at load runs under a budget of its own
(`folding`).
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter, thread_time
from typing import Any, TypeVar

from engine.errors import ExpressionError

MAX_VALUE_CHARS = 256 * 1024  # a rendered field, and any string or list built on the way
MAX_BUILT_CHARS = 64 * MAX_VALUE_CHARS  # all strings one render builds, together
MAX_ITERATIONS = 100_000  # loop iterations of one render, all loops together
MAX_RENDER_S = 0.25  # CPU time of one render, checked at each of the hooks above
MAX_INT_BITS = 65_536  # ~20,000 digits: `9 ** 9 ** 9` would take minutes

T = TypeVar("T")
_CONTAINERS = (list, tuple, dict, set, frozenset)


# CPU the garbage collector spent (per thread), which a render that happened to trigger a
# collection of a large heap must not be charged for: a big simulate would otherwise fail
# ordinary templates at random.
_gc = threading.local()


def _gc_time() -> float:
    return float(getattr(_gc, "spent", 0.0))


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc.started = thread_time()
    elif hasattr(_gc, "started"):
        _gc.spent = _gc_time() + thread_time() - _gc.started


gc.callbacks.append(_on_gc)


class RenderLimitError(ExpressionError):
    """A render went over one of its limits; the message names the limit."""


def _over(what: str) -> RenderLimitError:
    return RenderLimitError(f"render limit: {what}")


class Budget:
    """What one render has spent so far."""

    __slots__ = ("built", "cpu_start", "deadline", "iterations", "max_built", "weights")

    def __init__(self, max_built: int = MAX_BUILT_CHARS) -> None:
        self.max_built = max_built
        # CPU time is what the limit is about: a render the OS pauses (a loaded machine)
        # must not fail for it. The wall clock is the cheap gate (~50 ns against ~700 ns):
        # until it passes the deadline, the CPU time cannot have either.
        self.cpu_start = thread_time() - _gc_time()
        self.deadline = perf_counter() + MAX_RENDER_S
        self.iterations = 0
        self.built = 0
        # id -> (the container, its weight): the container is held so that its id stays its
        # own for the whole render; the sandbox allows no template to change one.
        self.weights: dict[int, tuple[Any, int]] = {}

    def tick(self) -> None:
        if perf_counter() > self.deadline:
            self._check_cpu()
        if self.built > self.max_built:  # over already: folding at load goes on past a refusal
            raise _over(f"over {self.max_built} characters built in one render")

    def _check_cpu(self) -> None:
        used = thread_time() - _gc_time() - self.cpu_start
        if used > MAX_RENDER_S:
            raise _over(f"rendering took over {MAX_RENDER_S} s of CPU")
        self.deadline = perf_counter() + (MAX_RENDER_S - used)  # it was paused: on it goes

    def spend(self, chars: int) -> None:
        self.built += chars
        if self.built > self.max_built:
            raise _over(f"over {self.max_built} characters built in one render")
        self.tick()

    def iterate(self, iterator: Iterator[T]) -> Iterator[T]:
        for item in iterator:
            self.iterations += 1
            if self.iterations > MAX_ITERATIONS:
                raise _over(f"over {MAX_ITERATIONS} loop iterations in one render")
            if perf_counter() > self.deadline:
                self._check_cpu()
            yield item


_CURRENT: ContextVar[Budget | None] = ContextVar("kaskad_render_budget", default=None)


def current() -> Budget | None:
    return _CURRENT.get()


def run(fn: Any, arg: Any) -> Any:
    """`fn(arg)` as one render with a fresh budget (or within the render under way)."""
    if _CURRENT.get() is not None:
        return fn(arg)
    token = _CURRENT.set(Budget())
    try:
        return fn(arg)
    finally:
        _CURRENT.reset(token)


@contextmanager
def folding() -> Iterator[None]:
    """Around compiling a template or expression. Jinja folds the constant parts of it at
    load by calling their filters (`'a' | center(200000)`, `'\\\\' | pprint | pprint ...`);
    these are then counted as in a render, with all of them together allowed no more than
    one value's worth of characters. A fold over that, or over the render time, fails, and
    Jinja leaves the expression to render time, where the render's own limits refuse it:
    loading costs neither memory nor time whatever the template says.
    """
    token = _CURRENT.set(Budget(max_built=MAX_VALUE_CHARS))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def tick() -> None:
    budget = _CURRENT.get()
    if budget is not None:
        budget.tick()


def loop_items(iterable: Iterable[T]) -> Iterator[T]:
    """The items of a `for` loop, counted against the render's iterations and time."""
    iterator = iter(iterable)  # fails now, as the loop's own iter() would
    budget = _CURRENT.get()
    return iterator if budget is None else budget.iterate(iterator)


# -- sizes ---------------------------------------------------------------------------------


def weight(value: Any) -> int:
    """The characters and items `value` holds, a part held twice counted twice (what
    printing it writes, roughly); counting stops just past MAX_VALUE_CHARS."""
    if type(value) is str:
        return len(value)
    budget = _CURRENT.get()
    return _weigh(value, None if budget is None else budget.weights)


def _weigh(value: Any, memo: dict[int, tuple[Any, int]] | None) -> int:
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return 1
    if memo is not None:
        known = memo.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
    total = 1 + len(value)
    children = (x for pair in value.items() for x in pair) if isinstance(value, dict) else value
    for child in children:
        total += _weigh(child, memo)
        if total > MAX_VALUE_CHARS:
            total = MAX_VALUE_CHARS + 1
            break
    if memo is not None:
        memo[id(value)] = (value, total)
    return total


def _too_big() -> RenderLimitError:
    return _over(f"a value of over {MAX_VALUE_CHARS} characters or items")


def checked(value: T) -> T:
    """`value` (a string or a container just built), refused when over the size limit."""
    budget = _CURRENT.get()
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            raise _too_big()
        if budget is not None:
            budget.spend(len(value))
    elif isinstance(value, _CONTAINERS):
        if _weigh(value, None if budget is None else budget.weights) > MAX_VALUE_CHARS:
            raise _too_big()
        if budget is not None:
            budget.tick()
    return value


def expect(size: int) -> None:
    """Before building something of about `size` characters or items."""
    if size > MAX_VALUE_CHARS:
        raise _too_big()


def width(value: Any) -> None:
    """A width, fill count or precision an operation pads to."""
    if isinstance(value, int) and value > MAX_VALUE_CHARS:
        raise _over(f"a width or count of {value}, over {MAX_VALUE_CHARS}")


def join(pieces: Iterable[str]) -> str:
    """Environment.concat: joins buffers and whole renders, sized before they are joined."""
    if type(pieces) is list:
        size = sum(map(len, pieces))
        if size > MAX_VALUE_CHARS:
            raise _over(f"output over {MAX_VALUE_CHARS} characters")
        parts = pieces
    else:  # a render's generator: stopped as soon as it is over
        parts, size = [], 0
        for piece in pieces:
            size += len(piece)
            if size > MAX_VALUE_CHARS:
                raise _over(f"output over {MAX_VALUE_CHARS} characters")
            parts.append(piece)
    budget = _CURRENT.get()
    if budget is not None:
        budget.spend(size)
    return "".join(parts)


# -- operators -----------------------------------------------------------------------------

_BINOPS: dict[str, Any] = {
    "+": lambda a, b: a + b,
    "*": lambda a, b: a * b,
    "**": lambda a, b: a**b,
    "%": lambda a, b: a % b,
}
INTERCEPTED_BINOPS = frozenset(_BINOPS)


def binop(operator: str, left: Any, right: Any) -> Any:
    """`left operator right` for the operators that can build big values (the sandbox's
    call_binop, and the fast path's code)."""
    tick()
    if operator == "*":
        _check_repeat(left, right)
        _check_repeat(right, left)
        if type(left) is int and type(right) is int:
            _check_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left) > 1
            and left.bit_length() * right > MAX_INT_BITS
        ):
            _check_bits(left.bit_length() * right)
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right)
    result = _BINOPS[operator](left, right)
    if operator != "**" and isinstance(result, str | list | tuple):
        checked(result)
    return result


def _check_repeat(seq: Any, times: Any) -> None:
    if isinstance(seq, str | list | tuple) and isinstance(times, int) and times > 1:
        expect(weight(seq) * times)


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise _over(f"a number of over {MAX_INT_BITS} bits")


# %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)


def check_printf(fmt: str, args: Any) -> None:
    """`fmt % args` (and the `format` filter): widths, precisions and the values it repeats."""
    positional = list(args) if isinstance(args, tuple) else [args]
    index, size = 0, len(fmt)
    for match in _PRINTF.finditer(fmt):
        key, width_text, precision_text, kind = match.groups()
        if kind == "%" and match.group(0) == "%%":
            continue
        for text in (width_text, precision_text):
            if text == "*":
                value = positional[index] if index < len(positional) else 0
                index += 1
            elif text:
                value = _number(text)
            else:
                continue
            width(value)
            size += value if isinstance(value, int) else 0
        if key is not None and isinstance(args, dict):
            arg = args.get(key[1:-1])
        else:
            arg = positional[index] if index < len(positional) else None
            index += 1
        size += weight(arg)
    expect(size)


# [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?", re.S)


def check_format_spec(spec: str) -> None:
    """A `str.format` field's spec, before the field is formatted."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        return  # not the standard mini-language (a date's strftime spec): no widths
    for text in match.groups():
        if text:
            width(_number(text))


def _number(digits: str) -> int:
    # (beyond 18 digits one huge number is as good as another, and cheaper to read)
    return int(digits) if len(digits) <= 18 else 10**18


# -- string methods ------------------------------------------------------------------------


def check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Before `text.name(*args, **kwargs)` from a template: refuse what would be too big.

    Returns the arguments to call with (an iterable given to `join` is read once, here).
    """
    if name in ("ljust", "rjust", "center", "zfill") and args:
        width(args[0])
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            expect(len(text) + text.count("\t") * tabsize)
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        if isinstance(old, str) and isinstance(new, str) and isinstance(count, int):
            expect(replaced_size(text, old, new, count))
    elif name == "join" and args:
        items = list(args[0])
        expect(sum(map(weight, items)) + len(text) * max(len(items) - 1, 0))
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        expect(len(text) * max(longest, 1))
    return args


def replaced_size(text: str, old: str, new: str, count: int) -> int:
    found = len(text) + 1 if old == "" else text.count(old)
    if count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)
