"""A run's options and the figures it reports: what the runner hands in and reads back, nothing loop-bound."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..defaults import DEFAULT_ATTEMPTS, DEFAULT_CONCURRENCY
from ..model import Status
from .retry import Backoff

#: A row throttled this many times is not going to get through this run (429s do not use up attempts).
DEFAULT_MAX_THROTTLED = 50
#: Lookups repeated when a user an earlier request may have created is not found: Graph is eventually
#: consistent, and a user created a moment ago may not show yet. Waits follow the backoff's ceilings
#: (1, 2, 4 s by default).
DEFAULT_LOOKUP_RETRIES = 3


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight at most: a cap; the pace decides below it
    # users/s; None: start at retry.DEFAULT_RATE and follow the 429s; math.inf: no pacing at all
    rate: float | None = None
    attempts: int = DEFAULT_ATTEMPTS  # per row, for failures that count (5xx, no answer)
    max_throttled: int = DEFAULT_MAX_THROTTLED  # 429s per row before giving up on it
    lookup_retries: int = DEFAULT_LOOKUP_RETRIES  # lookups again when a user that may exist is not found
    backoff: Backoff = Backoff()
    queue_size: int | None = None  # default 2 x concurrency; now only sizes the window's floor (lanes: flow.py)
    window: int | None = None  # rows between input and sink; default max(256, 4 x concurrency)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("the rate must be a positive number of users per second")

    @property
    def effective_queue_size(self) -> int:
        return self.queue_size or 2 * self.concurrency

    @property
    def effective_window(self) -> int:
        # At least one row per worker plus a full queue, or the workers would starve behind the window.
        floor = self.concurrency + self.effective_queue_size + 1
        return max(self.window or max(256, 4 * self.concurrency), floor)


@dataclass(slots=True)
class CustomerFigures:
    """One customer's line in the Summary (several customers in one sheet): its rows by status and its pace."""

    counts: dict[str, int] = field(default_factory=dict)  # per status value
    seconds: float = 0.0  # first request to last answer of this customer
    throttled: int = 0  # 429 answers in its scope
    eased_to: float | None = None  # a fixed rate eased after 429s, to this

    @property
    def achieved_rate(self) -> float | None:
        created = self.counts.get(Status.CREATED.value, 0)
        return created / self.seconds if self.seconds > 0 and created else None


@dataclass(slots=True)
class PipelineStats:
    """Figures for the summary; times are the pipeline's clock."""

    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Status})
    problem_counts: dict[str, int] = field(default_factory=dict)
    rows: int = 0  # taken from the input: each got a result, including those listed as not reached
    sent_rows: int = 0  # rows with at least one create request
    requests: int = 0  # create requests sent
    throttled: int = 0  # 429 answers
    retries: int = 0  # create requests that repeated an earlier one of the same row
    lookups: int = 0  # users looked up after a duplicate refusal or an unknown outcome
    step_requests: int = 0  # requests of the steps after create (license, profile, manager...)
    not_finished: int = 0  # rows taken but left unfinished by stop() / abort()
    not_reached: int = 0  # rows to create that were never sent because the run stopped first (listed pending)
    max_pending: int = 0  # most rows between input and sink at once (bounded by the window)
    most_in_flight: int = 0  # most requests in flight at once (the pace decides, --concurrency caps)
    first_send: float | None = None
    last_answer: float | None = None
    rate_settled: float = 0.0  # users/s the rate controller ended at
    interrupted: bool = False  # stopped by a person or a scheduler (stop() / abort()): exit 130
    halted: str | None = None  # why the run stopped taking rows on its own (the sign-in failed mid-run)
    denied: str | None = None  # the service's refusal for lack of permission, naming the roles needed: exit 3

    customers: dict[str, CustomerFigures] = field(default_factory=dict)  # by customer id as the rows give it

    def customer(self, customer: str) -> CustomerFigures:
        found = self.customers.get(customer.lower())
        if found is None:
            found = self.customers[customer.lower()] = CustomerFigures()
        return found

    @property
    def sending_seconds(self) -> float:
        if self.first_send is None or self.last_answer is None:
            return 0.0
        return max(0.0, self.last_answer - self.first_send)

    @property
    def achieved_rate(self) -> float | None:
        """Created users per second over the sending phase (first request to last answer)."""
        seconds = self.sending_seconds
        created = self.counts.get(Status.CREATED.value, 0)
        return created / seconds if seconds > 0 and created else None


def pace_lines(stats: PipelineStats) -> dict[str, str]:
    """The lines about the pace under the Summary and the closing table: a fixed rate eased after 429s, and
    with several customers one line each (created, failed, rate achieved)."""
    sent = {
        customer: figures
        for customer, figures in stats.customers.items()
        if figures.seconds > 0 or figures.throttled
    }
    if len(sent) <= 1:
        eased = next((figures.eased_to for figures in sent.values() if figures.eased_to), None)
        return {"pace": _eased(eased)} if eased else {}
    return {f"customer {customer}": _customer_line(figures) for customer, figures in sent.items()}


def _eased(rate: float) -> str:
    return f"rate eased to {rate:.3g}/s after 429s"


def _customer_line(figures: CustomerFigures) -> str:
    counts = figures.counts
    words = [f"{counts.get(Status.CREATED.value, 0)} created", f"{counts.get(Status.FAILED.value, 0)} failed"]
    for status in (Status.PARTIAL, Status.PENDING):
        if counts.get(status.value):
            words.append(f"{counts[status.value]} {status.value}")
    achieved = figures.achieved_rate
    words.append(f"{achieved:.2f} created/s" if achieved else "0 created/s")
    if figures.throttled:
        words.append(f"{figures.throttled} answers of 429")
    if figures.eased_to:
        words.append(_eased(figures.eased_to))
    return ", ".join(words)
