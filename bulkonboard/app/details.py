"""The Summary sheet's account of how a run went: source, pace, requests, retries, 429s, why it stopped early.

Apart from runner.py so that the run's control flow and the words that describe it can be read (and grow) apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..sending.figures import pace_lines
from ..sending.retry import DEFAULT_RATE

if TYPE_CHECKING:
    from ..sending.figures import PipelineStats
    from .runner import RunOptions


def run_details(
    options: RunOptions,
    stats: PipelineStats,
    *,
    source: str,
    discovered: float | None,
    journal_run: int | None,
    passwords: Path | None,
    seconds: tuple[float, float],
) -> dict[str, str | int | float]:
    """`seconds`: validating, then sending. `discovered`: the service's limit the slow start found, if any."""
    validation_seconds, sending_seconds = seconds
    rate = (
        f"{options.rate:g} users/s (--rate)"
        if options.rate is not None
        else f"not given: slow start from {DEFAULT_RATE:g} users/s, then just under what the service accepts"
    )
    details: dict[str, str | int | float] = {
        "source": source,
        "rate": rate,
        "concurrency": options.concurrency,
        "requests in flight (most at once)": stats.most_in_flight,
        "validation (s)": round(validation_seconds, 3),
        "sending (s)": round(sending_seconds, 3),
        "rows sent": stats.sent_rows,
        "create requests": stats.requests,
        "step requests": stats.step_requests,  # license, profile, manager: paced with the creates
        "retries": stats.retries,
        "throttled (429)": stats.throttled,
        "users looked up": stats.lookups,
        "achieved rate (created/s)": round(stats.achieved_rate, 3) if stats.achieved_rate else 0.0,
        "rate settled at (users/s)": round(stats.rate_settled, 3),
        "interrupted": "yes" if stats.interrupted else "no",
    }
    if options.rate is None:
        details["service's limit found at (users/s)"] = round(discovered, 3) if discovered else "not met"
    details.update(pace_lines(stats))  # a rate eased after 429s; a line per customer when there are several
    if stats.halted:
        details["stopped early"] = f"{stats.halted}: no new row was sent after it"
    if stats.denied:
        details["stopped early"] = f"{stats.denied}: no new row was sent after it"
    if stats.interrupted or stats.halted or stats.denied:
        details["rows not finished"] = stats.not_finished
        details["rows not reached"] = stats.not_reached
    if journal_run is not None:
        details["journal run"] = journal_run
    if passwords is not None:
        details["generated passwords"] = str(passwords)
    return details
