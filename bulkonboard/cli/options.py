"""Option values checked before anything is opened: a typo gets exit 2 and one line that shows the fix, instead of
reaching the run (a `ht!tp://x` once became a journal's service, then an "unexpected ValueError")."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

import click

from ..errors import InputError
from ..sending.pipeline import DEFAULT_CONCURRENCY


class Rate(click.ParamType):
    """Users per second, above 0. `nan` parses as a float and would stall the pacer: refused. `inf` stays: no pacing
    at all, bounded by --concurrency and the service's 429s (the benchmarks run so against the sandbox)."""

    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = math.nan
        if math.isnan(rate) or rate <= 0:
            self.fail(
                f"{value!r} is not a rate: give users per second above 0, e.g. --rate 20 (or leave --rate out and "
                "the run adapts to the service)",
                param,
                ctx,
            )
        return rate


class Concurrency(click.ParamType):
    """Requests in flight: a whole number in range, refused with the range and an example (one line, exit 2)."""

    name = "concurrency"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = 0
        if not MIN_CONCURRENCY <= count <= MAX_CONCURRENCY:
            self.fail(
                f"{value!r}: give how many requests may be in flight, {MIN_CONCURRENCY} to {MAX_CONCURRENCY}, "
                f"e.g. --concurrency {DEFAULT_CONCURRENCY}",
                param,
                ctx,
            )
        return count


MIN_CONCURRENCY, MAX_CONCURRENCY = 1, 256
_SCHEME = re.compile(r"^([^:/?#]*)://")
_LOCAL_HOSTS = ("localhost", "127.", "[::1]", "0.0.0.0")


def checked_url(value: str, option: str, *, example: str) -> str:
    """A service URL as aiohttp needs it (http or https, a host, a numeric port), refused up front with the fix:
    a URL typo must never reach the run (it became a journal for `ht!tp://x`, then an unexpected ValueError)."""
    url = value.strip()
    shown = f"{option} {value!r}"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InputError(f"{shown}: a URL has no spaces or control characters; e.g. {option} {example}")
    scheme = _SCHEME.match(url)
    if scheme is None:
        if not url or url.startswith("/"):
            raise InputError(f"{shown}: not a URL; e.g. {option} {example}")
        prefix = "http://" if url.lower().startswith(_LOCAL_HOSTS) else "https://"
        raise InputError(f"{shown}: add {prefix}, as in {option} {prefix}{url}")
    if scheme.group(1).lower() not in ("http", "https"):
        raise InputError(f"{shown}: the URL must start with http:// or https://; e.g. {option} {example}")
    parts = urlsplit(url.replace("{tenant}", "tenant"))
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise InputError(f"{shown}: the port must be a number from 1 to 65535; e.g. {option} {example}") from None
    if not parts.hostname:
        raise InputError(f"{shown}: the URL names no host; e.g. {option} {example}")
    return url


#: `validate --license SKU` (repeatable): the licenses of rows whose `licenses` cell is empty.
license_option = click.option(
    "--license",
    "licenses",
    multiple=True,
    metavar="SKU",
    help="A license for rows whose licenses cell is empty: a part number (ENTERPRISEPACK), a product name or a "
    "SKU id. Repeatable.",
)
