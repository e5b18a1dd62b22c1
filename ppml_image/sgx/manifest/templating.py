"""A Jinja2 sandbox for manifest templates: data in, text out, bounded.

A manifest template is rendered inside the process that holds the signing
key, and templates come from other people. So a template:

* cannot reach Python's internals or run code: it is rendered by Jinja2's
  :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no ``_`` attributes,
  no mutation of lists and dicts);
* cannot read other files: ``{% include %}``, ``{% import %}`` and
  ``{% extends %}`` are refused (nothing outside the template is reviewed);
* cannot exhaust memory or CPU: every operator, method, filter and
  concatenation that can make a value grow is checked *before* it runs
  against the limits below, loops and calls draw on a per-render budget, and
  the rendered text is capped.

Gramine's own ``gramine-manifest`` has none of this; for valid templates the
output is byte-identical to it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shlex
import signal
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.filters import do_int
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

MiB = 1 << 20
MAX_OUTPUT = 256 * MiB  # characters a render may produce, all output statements together
MAX_STRING = 16 * MiB  # characters of one string made or processed by an operation
MAX_ITEMS = 1 << 20  # items of one list, tuple or dict made or processed
MAX_INT_BITS = 4096  # an integer a template computes (2**4096 is ample for sizes)
MAX_WIDTH = 1 << 20  # a width or precision in a format specification
MAX_ITERATIONS = 10_000_000  # for-loop iterations per render
MAX_CALLS = 250_000  # function, method and macro calls per render
# Characters and items that operations read or make, per render: operators,
# comparisons, calls, filters and tests cost time in proportion to their
# operands, so a loop cannot repeat a cheap-looking operation on big values
# without end. A real manifest uses a few MB of it.
MAX_WORK = 1 << 30
# CPU seconds one render may use. Some filters cost more than their input
# and output sizes say (urlize and wordwrap scan with regular expressions and
# textwrap): the sizes above bound memory, this bounds time. A real manifest
# renders in milliseconds.
MAX_CPU_SECONDS = 30.0
# Render-time state lives in the render's variables under a key no template
# can name (not an identifier), so each render has its own budget.
_BUDGET_KEY = "ppml-image:budget"


class TemplateLimitError(TemplateRuntimeError):
    """A template asked for more memory or work than any manifest needs."""


@dataclass
class _Budget:
    output: int = 0
    iterations: int = 0
    calls: int = 0
    work: int = 0
    cpu_started: float = field(default_factory=time.process_time)

    def charge(self, amount: int) -> None:
        self.work += amount
        if self.work > MAX_WORK:
            raise _limit(f"the template does more than {MAX_WORK:,} characters' worth of "
                         "string and list operations")
        self.check_cpu()

    def check_cpu(self) -> None:
        """Between operations (and in threads, where no CPU timer can interrupt)."""
        if time.process_time() - self.cpu_started > MAX_CPU_SECONDS:
            raise _cpu_limit()


def _cpu_limit() -> TemplateLimitError:
    return _limit(f"the template used more than {MAX_CPU_SECONDS:g} s of CPU time")


@contextlib.contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """Interrupt the render once it has used *seconds* of CPU time (ITIMER_PROF).

    In the main thread only (signals are delivered there); elsewhere the
    budget is still checked between operations by :meth:`_Budget.check_cpu`.
    """
    if threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(_signum: int, _frame: Any) -> None:
        raise _cpu_limit()

    previous = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _limit(message: str) -> TemplateLimitError:
    return TemplateLimitError(message)


# --------------------------------------------------------------------------
# Size checks
# --------------------------------------------------------------------------
def _size(value: Any) -> tuple[str, int] | None:
    """('characters', n) / ('items', n) for values whose size matters, else None."""
    if isinstance(value, (str, bytes, bytearray)):
        return "characters", len(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return "items", len(value)
    return None


def _cost(value: Any) -> int:
    """What copying or scanning *value* once costs: its length (O(1) to know).

    Enough for operators, slices and calls, which copy references, not items.
    """
    size = _size(value)
    return 1 if size is None else max(size[1], 1)


def _one(_value: Any) -> int:
    return 1


_ITEM_COST = 16  # a visited item: what reading it costs in Python, in characters


_FLAT = frozenset({str, bytes, int, float, bool, type(None)})


def _deep_cost(value: Any) -> int:
    """What comparing or sorting *value* costs: its items are read too.

    Only for operations that read items (comparisons, ``in``, comparing
    tests, sorting, list.index/count): each item costs _ITEM_COST plus its
    length. A flat list is summed in C; nested containers are walked (and
    the walk stops once it passes MAX_WORK), so that the accounting stays
    cheaper than the work it accounts for.
    """
    if not isinstance(value, (list, tuple, dict, set, frozenset)):
        return _cost(value)
    items: Any = list(value.values()) + list(value) if isinstance(value, dict) else value
    kinds = set(map(type, items))
    if kinds <= {str, bytes}:
        inner = sum(map(len, items))
    elif kinds <= _FLAT:
        inner = sum(len(item) for item in items if type(item) in (str, bytes))
    else:
        inner = text_size(value, MAX_WORK)[0]
    return _ITEM_COST * len(items) + inner


def text_size(value: Any, cap: int = MAX_STRING) -> tuple[int, int]:
    """An upper bound on ``len(str(value))`` and the items visited to find it.

    Walks containers (and namespaces) iteratively, without building the
    text, and stops as soon as the bound passes *cap*: ``str([s] * 10**6)``
    of a 16 MiB ``s`` is refused after a few items instead of being built.
    """
    if isinstance(value, str):
        return len(value), 1
    total, visits, stack = 0, 0, [value]
    while stack and total <= cap:
        item = stack.pop()
        visits += 1
        if isinstance(item, str):  # inside a container: its repr
            total += (2 if item.isprintable() else 10) * len(item) + 2
        elif isinstance(item, (bytes, bytearray)):
            total += 4 * len(item) + 14
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 12 + 2 * len(item)  # "frozenset({...})"
            stack.extend(item)
        elif isinstance(item, Namespace):
            total += 14
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        elif isinstance(item, os.PathLike):
            total += 2 * len(os.fspath(item)) + 32
        else:  # numbers, functions, loop objects...: short texts
            total += 256
    return total, visits


_TEXT_TYPES = (list, tuple, dict, set, frozenset, bytes, bytearray, Namespace)


def check_text(value: Any, what: str, budget: _Budget | None, cap: int = MAX_STRING) -> int:
    """Refuse to turn a container into text of more than *cap* characters
    (the walk is charged to *budget*); returns the bound."""
    if isinstance(value, str) or not isinstance(value, _TEXT_TYPES):
        return len(value) if isinstance(value, str) else 256
    size, visits = text_size(value, cap)
    if budget is not None:
        budget.charge(visits * _ITEM_COST)
    if size > cap:
        raise _limit(f"{what} would be more than {cap:,} characters as text; templates are "
                     "limited to that")
    return size


def _short(value: Any) -> str:
    """*value* for an error message, never built from a huge container."""
    if isinstance(value, _TEXT_TYPES) and not isinstance(value, (bytes, bytearray)):
        return f"a {type(value).__name__} of {len(value) if _size(value) else '?'} items"
    return repr(str(value)[:60])


def check_value(value: Any, what: str = "a value") -> Any:
    """Refuse a string over MAX_STRING characters or a collection over MAX_ITEMS."""
    size = _size(value)
    if size is not None:
        unit, n = size
        cap = MAX_STRING if unit == "characters" else MAX_ITEMS
        if n > cap:
            raise _limit(f"{what} has {n:,} {unit}; templates are limited to {cap:,}")
    if isinstance(value, int) and not isinstance(value, bool) \
            and value.bit_length() > MAX_INT_BITS:
        raise _limit(f"{what} is an integer of {value.bit_length():,} bits; templates are "
                     f"limited to {MAX_INT_BITS}")
    return value


def _check_result(predicted: int, unit: str, what: str) -> None:
    cap = MAX_STRING if unit == "characters" else MAX_ITEMS
    if predicted > cap:
        raise _limit(f"{what} would make {predicted:,} {unit}; templates are limited to "
                     f"{cap:,}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sequence_unit(value: Any) -> str | None:
    if isinstance(value, (str, bytes, bytearray)):
        return "characters"
    if isinstance(value, (list, tuple)):
        return "items"
    return None


def _check_binop(operator: str, left: Any, right: Any, budget: _Budget | None = None) -> None:
    """Predict the size of ``left OP right`` and refuse an absurd one before it is made."""
    check_value(left, f"the left side of {operator!r}")
    check_value(right, f"the right side of {operator!r}")
    what = f"{operator!r}"
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            unit = _sequence_unit(seq)
            if unit and _is_int(count):
                _check_result(len(seq) * max(count, 0), unit, what)
                return
        if _is_int(left) and _is_int(right):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise _limit(f"{what} would make an integer of about {bits:,} bits; templates "
                             f"are limited to {MAX_INT_BITS}")
    elif operator == "**":
        if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            bits = (abs(left).bit_length() - 1) * right
            if bits > MAX_INT_BITS:
                raise _limit(f"'**' would make an integer of about {bits:,} bits; templates "
                             f"are limited to {MAX_INT_BITS}")
    elif operator == "+":
        unit = _sequence_unit(left)
        if unit and _sequence_unit(right) == unit:
            _check_result(len(left) + len(right), unit, what)
    elif operator == "%" and isinstance(left, (str, bytes)):
        _check_percent_format(left, right, budget)


_PERCENT_FLAGS = "#0- +"


def _percent_specs(fmt: str | bytes) -> Iterator[tuple[str | None, list[str], str]]:
    """The conversions of a printf-style format, parsed as CPython parses them:
    (mapping key or None, [width, precision] as written, conversion)."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    i, n = 0, len(text)
    while True:
        i = text.find("%", i)
        if i < 0 or i + 1 >= n:
            return
        i += 1
        key = None
        if text[i] == "(":
            depth, start = 1, i + 1
            i += 1
            while i < n and depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            key = text[start : i - 1]
        while i < n and text[i] in _PERCENT_FLAGS:
            i += 1
        numbers = []
        for lead in ("", "."):
            if lead and (i >= n or text[i] != "."):
                numbers.append("")
                continue
            i += len(lead)
            start = i
            if i < n and text[i] == "*":
                i += 1
            else:
                while i < n and text[i].isdigit():
                    i += 1
            numbers.append(text[start:i])
        while i < n and text[i] in "hlL":
            i += 1
        if i >= n:
            return
        yield key, numbers, text[i]
        i += 1


def _converted_length(value: Any, conversion: str, budget: _Budget | None) -> int:
    if isinstance(value, str) and conversion in "sb":
        return len(value)
    if conversion in "sbra":  # ascii(): at most 10 characters per character
        size = check_text(value, "a value in a '%' format", budget, MAX_STRING // 10 + 1) \
            if isinstance(value, _TEXT_TYPES) else len(repr(value))
        return size * (10 if conversion == "a" else 1)
    if isinstance(value, float) and math.isfinite(value):
        return len(str(int(value))) + 32
    if _is_int(value):
        return len(str(value)) + 32
    return 32


def _check_percent_format(fmt: str | bytes, args: Any, budget: _Budget | None = None) -> None:
    """``fmt % args`` with a predicted result size: repeated ``%(key)s`` of a
    big value, and huge widths or precisions, are refused before formatting."""
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    total, cache = len(fmt), {}
    for key, numbers, conversion in _percent_specs(fmt):
        if conversion == "%":
            continue
        width = 0
        for number in numbers:
            if number == "*":
                star = positional.pop(0) if positional else 0
                number = str(abs(star)) if _is_int(star) else "0"
            if number and int(number) > MAX_WIDTH:
                raise _limit(f"a width or precision of {int(number):,} in a '%' format; "
                             f"templates are limited to {MAX_WIDTH:,}")
            width += int(number or 0)
        if key is not None and mapping is not None:
            value = mapping.get(key)
        else:
            value = positional.pop(0) if positional else ""
        marker = (id(value), conversion)
        if marker not in cache:
            cache[marker] = _converted_length(value, conversion, budget)
        total += width + cache[marker]
        if total > MAX_STRING:
            _check_result(total, "characters", "a '%' format")


class _SizedFormatter(SandboxedFormatter):
    """``str.format`` that counts what it makes and refuses huge widths."""

    def __init__(self, env: jinja2.Environment, budget: _Budget) -> None:
        super().__init__(env)
        self.total = 0
        self.budget = budget

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            if int(number) > MAX_WIDTH:
                raise _limit(f"a width or precision of {int(number):,} in a format string; "
                             f"templates are limited to {MAX_WIDTH:,}")
        check_text(check_value(value), "a value in a format string", self.budget)
        text = super().format_field(value, format_spec)
        self.total += len(text)
        _check_result(self.total, "characters", "str.format")
        return text


def _predicted_items(method: str, text: Any, args: tuple[Any, ...]) -> int:
    """An upper bound on the items a split-like method makes (*text*: str or bytes)."""
    if len(text) <= MAX_ITEMS:
        return len(text) + 1
    sep = args[0] if args else None
    if method in ("split", "rsplit") and sep:
        return int(text.count(sep)) + 1
    words = rb"\S+" if isinstance(text, (bytes, bytearray)) else r"\S+"
    if method in ("split", "rsplit"):
        return sum(1 for _ in re.finditer(words, text))
    newline = "\n" if isinstance(text, str) else b"\n"
    return int(text.count(newline)) + len(text) // MAX_ITEMS + 1


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Predict the size a str/bytes method makes; returns the (materialised) args."""
    owner: Any = getattr(method, "__self__", None)
    if not isinstance(owner, (str, bytes, bytearray)):
        return args
    name = getattr(method, "__name__", "")
    check_value(owner, f"the string before .{name}()")
    what = f".{name}()"
    length = len(owner)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        if _is_int(width):
            _check_result(max(length, width), "characters", what)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if _is_int(size):
            tab: Any = "\t" if isinstance(owner, str) else b"\t"
            _check_result(length + owner.count(tab) * max(size, 0), "characters", what)
    elif name == "join" and args:
        items = list(_counted(args[0], MAX_ITEMS, what))
        total = length * max(len(items) - 1, 0)
        total += sum(len(x) for x in items if isinstance(x, (str, bytes, bytearray)))
        _check_result(total, "characters", what)
        args = (items, *args[1:])
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1, what)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))),
                      default=1)
        _check_result(length * max(longest, 1), "characters", what)
    elif name in ("split", "rsplit", "splitlines"):
        _check_result(_predicted_items(name, owner, args), "items", what)
    return args


def _check_replace(text: Any, old: Any, new: Any, count: Any, what: str) -> None:
    if not isinstance(text, (str, bytes)) or type(old) is not type(text) \
            or type(new) is not type(text):
        return
    found: int = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if _is_int(count) and count >= 0:
        found = min(found, count)
    _check_result(len(text) + found * max(len(new) - len(old), 0), "characters", what)


def _counted(iterable: Iterable[Any], cap: int, what: str) -> Iterator[Any]:
    for index, item in enumerate(iterable):
        if index >= cap:
            raise _limit(f"{what} has more than {cap:,} items; templates are limited to that")
        yield item


# --------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------
def _first_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str,
               default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _filter_checks(name: str, value: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any], budget: _Budget) -> Any:
    """Predict what a built-in filter makes; may return a materialised *value*."""
    what = f"the {name!r} filter"
    text = value if isinstance(value, str) else None
    if name == "center" and text is not None:
        width = _first_arg(args, kwargs, 0, "width", 80)
        if _is_int(width):
            _check_result(max(len(text), width), "characters", what)
    elif name == "indent" and text is not None:
        width = _first_arg(args, kwargs, 0, "width", 4)
        prefix = width if _is_int(width) else len(str(width))
        _check_result(len(text) + (text.count("\n") + 1) * max(prefix, 0), "characters", what)
    elif name == "wordwrap" and text is not None:
        wrap = _first_arg(args, kwargs, 2, "wrapstring", None)
        _check_result(len(text) * (1 + len(str(wrap or "\n"))), "characters", what)
    elif name == "format" and text is not None:
        _check_percent_format(text, kwargs or args, budget)
    elif name == "replace" and len(args) >= 2:
        count = _first_arg(args, kwargs, 2, "count", None)
        _check_replace(str(value), str(args[0]), str(args[1]),
                       -1 if count is None else count, what)
    elif name == "join":
        value = list(_counted(value, MAX_ITEMS, what))
        sep = _first_arg(args, kwargs, 0, "d", "")
        items = check_text(value, what, budget)  # every item becomes text
        _check_result(len(str(sep)) * max(len(value) - 1, 0) + items, "characters", what)
    elif name in ("batch", "slice"):
        count = _first_arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 1)
        if _is_int(count):
            _check_result(count, "items", what)
    elif name == "tojson":
        indent = _first_arg(args, kwargs, 0, "indent", None)
        if (indent if _is_int(indent) else len(str(indent or ""))) > 64:
            raise _limit(f"{what}: an indent over 64 is refused in templates")
    elif name == "sum":
        start = _first_arg(args, kwargs, 1, "start", 0)
        if not isinstance(start, (int, float)):
            raise _limit(f"{what}: only numbers can be summed in templates")
    return value


_SORTING = ("sort", "dictsort", "unique", "groupby", "min", "max")
# Filters that do not turn their whole value (or arguments) into text; every
# other filter may, so a container given to it is size-checked as text first.
_STRUCTURAL = frozenset({
    "length", "count", "first", "last", "list", "sort", "unique", "map", "select", "reject",
    "selectattr", "rejectattr", "batch", "slice", "groupby", "sum", "min", "max", "reverse",
    "dictsort", "items", "default", "d", "attr", "random", "int", "float", "bool", "abs",
    "round", "join"})
_TEXT_TESTS = frozenset({"lower", "upper"})
# Filters that look at a value without reading it all (O(1)): charged 1.
_CHEAP = frozenset({"length", "count", "first", "last", "default", "d", "attr", "random",
                    "int", "float", "bool", "abs", "round"})
# Tests that compare values (and so read every item); the others are O(1).
_COMPARING_TESTS = frozenset({"eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le",
                              "<=", "gt", "greaterthan", ">", "ge", ">=", "in"})


def _guard(kind: str, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a built-in filter or test: inputs within the limits and charged to
    the render's budget, the result predicted where an argument decides its
    size, and checked after it returns."""
    pass_arg = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    @jinja2.pass_context
    def guarded(context: jinja2.runtime.Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(context)
        check_value(value, f"the value given to the {name!r} {kind}")
        # Comparing tests and sorting filters (n*log(n) comparisons) read items.
        measure: Callable[[Any], int]
        if name in (_COMPARING_TESTS if kind == "test" else _SORTING):
            measure = _deep_cost
        elif kind == "test" or name in _CHEAP:
            measure = _one
        else:
            measure = _cost
        cost = measure(value)
        for item in (*args, *kwargs.values()):
            check_value(item, f"an argument of the {name!r} {kind}")
            cost += measure(item)
        if name in _SORTING and _size(value):
            cost *= max(1, len(value).bit_length())
        budget.charge(cost)
        if (name not in _STRUCTURAL) if kind == "filter" else (name in _TEXT_TESTS):
            for item in (value, *args, *kwargs.values()):
                check_text(item, f"a value given to the {name!r} {kind}", budget)
        if kind == "filter":
            value = _filter_checks(name, value, args, kwargs, budget)
        lead = {"context": (context,), "eval_context": (context.eval_ctx,),
                "environment": (context.environment,)}.get(pass_arg or "", ())
        result = func(*lead, value, *args, **kwargs)
        check_value(result, f"the result of the {name!r} {kind}")
        budget.charge(_cost(result))
        return result

    guarded.__name__ = guarded.__qualname__ = getattr(func, "__name__", name)
    guarded.__doc__ = func.__doc__
    return guarded


_TOML_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\", ord("\b"): "\\b", ord("\t"): "\\t",
                 ord("\n"): "\\n", ord("\f"): "\\f", ord("\r"): "\\r"}
_TOML_ESCAPES.update({c: f"\\u{c:04x}" for c in [*range(0x20), 0x7F]
                      if c not in _TOML_ESCAPES})
_SURROGATE = re.compile("[\ud800-\udfff]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
INT64 = (-(1 << 63), (1 << 63) - 1)


def toml_string(text: str) -> str:
    """*text* as a TOML basic string, every special character escaped."""
    if "\0" in text:
        raise TemplateRuntimeError("a NUL character cannot go into a manifest value "
                                   "(Gramine would cut the string there)")
    if _SURROGATE.search(text):
        raise TemplateRuntimeError("a value that is not valid Unicode text (undecodable "
                                   "bytes?) cannot go into a manifest")
    return '"' + text.translate(_TOML_ESCAPES) + '"'


def toml_value(value: Any) -> str:
    """The ``toml`` filter: *value* written as a TOML value, never as TOML syntax.

    A string becomes a correctly escaped basic string, so a ``-D`` value can
    never close the string and add keys; numbers and booleans become literals.
    """
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises the usual "undefined" error
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise TemplateRuntimeError(f"{value} does not fit a TOML integer (64 bits)")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, os.PathLike):
        return toml_string(os.fspath(value))  # type: ignore[arg-type]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = (f"{k if _BARE_KEY.match(str(k)) else toml_string(str(k))} = {toml_value(v)}"
                 for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    raise TemplateRuntimeError(f"a {type(value).__name__} cannot be written as a TOML value")


def shell_quote(value: Any) -> str:
    """The ``sh`` filter: *value* as one shell word (``shlex.quote``)."""
    text = str(value)
    if "\0" in text:
        raise TemplateRuntimeError("a NUL character cannot go into a shell command")
    return shlex.quote(text)


_WORD_BAD = re.compile(r"[\s\"'\\`$;&|<>(){}\x00-\x1f\x7f]")


def one_word(value: Any) -> str:
    """The ``word`` filter: a value that must be a single plain word (JVM
    options and other whitespace-split lists, where a space adds an option)."""
    text = str(value)
    bad = _WORD_BAD.search(text)
    if not text or bad:
        raise TemplateRuntimeError(f"{text[:60]!r} must be one plain word (no spaces, "
                                   "quotes or shell characters)")
    return text


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")


def strict_bool(value: Any) -> bool:
    """The ``bool`` filter: a bare ``-D flag`` or true/false/yes/no/on/off/1/0."""
    if isinstance(value, bool):
        return value
    if _is_int(value) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise TemplateRuntimeError(f"{_short(value)} is not true or false")


_NO_DEFAULT = object()


def strict_int(value: Any, default: Any = _NO_DEFAULT, base: int = 10) -> int:
    """The ``int`` filter, strict: text that is not an integer is an error,
    not a silent 0 (``-D isvsvn=2x`` must not sign with ISVSVN 0). With an
    explicit *default*, Jinja2's lenient behaviour is kept."""
    if default is not _NO_DEFAULT:
        return do_int(value, default, base)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), base)
        except ValueError:
            pass
    raise TemplateRuntimeError(f"{_short(value)} is not an integer")


# --------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------
class _Guard(NodeTransformer):
    """Rewrites a parsed template so that its growth can be bounded.

    Output statements, for loops and ``~`` concatenations go through
    context-passing filters that count and check; nothing else changes, so
    the rendered text is the same as without the sandbox.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def _refuse(self, node: nodes.Node, tag: str) -> None:
        raise jinja2.TemplateSyntaxError(
            f"{{% {tag} %}} is not allowed: a manifest template must be self-contained "
            "(nothing outside it is reviewed or measured)", node.lineno, self.name)

    def visit_Include(self, node: nodes.Include) -> nodes.Node:
        self._refuse(node, "include")
        return node

    def visit_Import(self, node: nodes.Import) -> nodes.Node:
        self._refuse(node, "import")
        return node

    def visit_FromImport(self, node: nodes.FromImport) -> nodes.Node:
        self._refuse(node, "from ... import")
        return node

    def visit_Extends(self, node: nodes.Extends) -> nodes.Node:
        self._refuse(node, "extends")
        return node

    @staticmethod
    def _wrap(node: Any, filter_name: str) -> nodes.Filter:
        return nodes.Filter(node, filter_name, [], [], None, None, lineno=node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._wrap(child, "ppml_output") for child in node.nodes]
        return node

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._wrap(node.iter, "ppml_iterate")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._wrap(nodes.List(node.nodes, lineno=node.lineno), "ppml_concat")

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        # Comparing and `in` read their operands: charge each one as it is
        # evaluated (chained comparisons still short-circuit).
        self.generic_visit(node)
        node.expr = self._wrap(node.expr, "ppml_charge_items")
        for operand in node.ops:
            operand.expr = self._wrap(operand.expr, "ppml_charge_items")
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node.arg, nodes.Slice):  # a slice copies
            node.node = self._wrap(node.node, "ppml_charge")
        return node


def _budget(context: jinja2.runtime.Context) -> _Budget:
    budget = context.resolve_or_missing(_BUDGET_KEY)
    if not isinstance(budget, _Budget):  # rendered without render(): a fresh budget
        budget = _Budget()
        context.parent[_BUDGET_KEY] = budget
    return budget


@jinja2.pass_context
def _output(context: jinja2.runtime.Context, value: Any) -> Any:
    budget = _budget(context)
    if not isinstance(value, str):
        check_text(value, "a printed value", budget)
    budget.output += len(value) if isinstance(value, str) else len(str(value))
    if budget.output > MAX_OUTPUT:
        raise _limit(f"the template produces more than {MAX_OUTPUT // MiB} MiB of text")
    return value


@jinja2.pass_context
def _iterate(context: jinja2.runtime.Context, iterable: Any) -> Iterator[Any]:
    budget = _budget(context)
    for item in iterable:
        budget.iterations += 1
        if budget.iterations > MAX_ITERATIONS:
            raise _limit(f"the template's loops run more than {MAX_ITERATIONS:,} times")
        yield item


@jinja2.pass_context
def _concat(context: jinja2.runtime.Context, values: list[Any]) -> str:
    budget = _budget(context)
    for value in values:
        check_text(check_value(value, "a value joined with '~'"), "a value joined with '~'",
                   budget)
    texts = [v if isinstance(v, str) else str(v) for v in values]
    total = sum(map(len, texts))
    _check_result(total, "characters", "'~'")
    budget.charge(total)
    return "".join(texts)


@jinja2.pass_context
def _charge(context: jinja2.runtime.Context, value: Any) -> Any:
    """A slice copies its operand: charge its length."""
    _budget(context).charge(_cost(value))
    return value


@jinja2.pass_context
def _charge_items(context: jinja2.runtime.Context, value: Any) -> Any:
    """A comparison or ``in`` reads its operand's items: charge them."""
    _budget(context).charge(_deep_cost(value))
    return value


class ManifestSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, plus resource limits and the manifest filters."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                         autoescape=False)
        self.globals.pop("lipsum", None)  # makes arbitrarily much text from one call
        self.filters.update({
            "toml": toml_value, "sh": shell_quote, "shell_quote": shell_quote,
            "word": one_word, "bool": strict_bool, "int": strict_int,
        })
        for name, func in list(self.filters.items()):
            self.filters[name] = _guard("filter", name, func)
        for name, func in list(self.tests.items()):
            self.tests[name] = _guard("test", name, func)  # type: ignore[arg-type]
        # The guards the rewritten template calls (see _Guard).
        self.filters.update({"ppml_output": _output, "ppml_iterate": _iterate,
                             "ppml_concat": _concat, "ppml_charge": _charge,
                             "ppml_charge_items": _charge_items})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        budget = _budget(context)
        _check_binop(operator, left, right, budget)
        budget.charge(_cost(left) + _cost(right))
        result = super().call_binop(context, operator, left, right)
        budget.charge(_cost(result))
        return result

    def call(__self, __context: jinja2.runtime.Context, __obj: Any,
             *args: Any, **kwargs: Any) -> Any:
        budget = _budget(__context)
        budget.calls += 1
        if budget.calls > MAX_CALLS:
            raise _limit(f"the template makes more than {MAX_CALLS:,} calls")
        for value in (*args, *kwargs.values()):
            check_value(value, "an argument")
            budget.charge(_cost(value))
        if isinstance(__obj, (types.BuiltinMethodType, types.MethodType)):
            args = _check_method(__obj, args, kwargs)
            owner = getattr(__obj, "__self__", None)
            # list.index/count compare every item with the argument.
            reads_items = getattr(__obj, "__name__", "") in ("index", "count") \
                and isinstance(owner, (list, tuple))
            budget.charge(_deep_cost(owner) if reads_items else _cost(owner))
        result = super().call(__context, __obj, *args, **kwargs)
        check_value(result, "the result of a call")
        budget.charge(_cost(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` through a formatter that counts its output."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) \
                or value.__name__ not in ("format", "format_map") \
                or not isinstance(value.__self__, str):
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        @jinja2.pass_context
        def wrapper(context: jinja2.runtime.Context, *args: Any, **kwargs: Any) -> str:
            formatter = _SizedFormatter(self, _budget(context))
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                mapping: Any = args[0]
                return str(formatter.vformat(fmt, (), mapping))
            return str(formatter.vformat(fmt, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    def template(self, source: str, name: str) -> jinja2.Template:
        """Parse, refuse what is not allowed, add the guards, compile."""
        tree = self.parse(source, name, name)
        _Guard(name).visit(tree)
        code = self.compile(tree, name, name)
        return self.template_class.from_code(self, code, self.make_globals(None), None)

    def render(self, source: str, variables: Mapping[str, Any], name: str) -> str:
        """Render *source* with *variables* under a fresh budget (sizes, work, CPU time)."""
        with cpu_budget(MAX_CPU_SECONDS):
            template = self.template(source, name)
            return template.render({**variables, _BUDGET_KEY: _Budget()})


def error_line(exc: BaseException, name: str) -> int | None:
    """The template line an exception was raised at, from Jinja2's rewritten traceback."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def describe(exc: BaseException) -> str:
    """A short, one-line description of an error raised while rendering."""
    if isinstance(exc, RecursionError):
        return ("recursion too deep (a macro that calls itself without end, or data nested "
                "too deeply)")
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else str(exc)
    text = " ".join(str(text).split())
    if len(text) > 200:
        text = text[:197] + "..."
    if isinstance(exc, (jinja2.TemplateError,)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["MAX_CALLS", "MAX_INT_BITS", "MAX_ITEMS", "MAX_ITERATIONS", "MAX_OUTPUT",
           "MAX_STRING", "MAX_WIDTH", "ManifestSandbox", "SecurityError", "TemplateLimitError",
           "check_value", "describe", "error_line", "one_word", "shell_quote", "strict_bool",
           "strict_int", "toml_string", "toml_value"]
