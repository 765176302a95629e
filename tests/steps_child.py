"""A run with the made-up step of steps_support.py, in a process of its own, against a standalone sandbox: the
test kills it with SIGKILL between two steps of a row, then runs it again.

    python -m tests.steps_child URL JOURNAL LEDGER ROWS [before|after UPN] [restore:UPN:ID] [existing:UPN:ID]

`restore:UPN:ID`: that row's UPN belongs to the soft-deleted user ID, to restore (`--restore-deleted`);
`existing:UPN:ID`: validation found that user active (a rerun after the restore). Prints `reached` when the step hangs, then (if it ever ends) one JSON line: every row's status, userId and
requestId, and the run's create and step requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import uuid
from pathlib import Path

import aiohttp

from bulkonboard.journal.store import open_journal
from bulkonboard.model import RowResult, Status
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions
from bulkonboard.sending.retry import Backoff
from bulkonboard.service.partnercenter import GraphClient, PartnerCenterClient, StaticTokens
from bulkonboard.sheets.facts import DeletedUser
from bulkonboard.sheets.validation import CheckedRow

from .steps_support import LedgerStep
from .support import CONTOSO, checked_row


def as_validated(row: CheckedRow, marks: dict[str, tuple[str, str]]) -> CheckedRow:
    """The row as validation would hand it over against the tenant the test staged (see the docstring)."""
    mark = marks.get(row.user.upn_key)
    if mark is None:
        return row
    kind, user_id = mark
    if kind == "restore":
        return CheckedRow(row.user, Status.VALID, (), None, DeletedUser(user_id, row.user.userPrincipalName, None))
    return CheckedRow(row.user, Status.SKIPPED, (), user_id)


async def main(
    url: str,
    journal_path: Path,
    ledger: Path,
    count: int,
    hang: tuple[str, str] | None,
    marks: dict[str, tuple[str, str]],
) -> None:
    results: list[RowResult] = []
    with open_journal(journal_path, service=url) as journal:
        journal.begin_run(
            input_path="steps", input_sha256="-", customer=CONTOSO, correlation_id=str(uuid.uuid4())
        )
        async with aiohttp.ClientSession() as session:
            tokens = StaticTokens("sandbox")
            client = PartnerCenterClient(session, tokens, base_url=url, correlation_id=str(uuid.uuid4()))
            graph = GraphClient(session, tokens, graph_url=f"{url}/graph/{{tenant}}")
            pipeline = Pipeline(
                client,
                options=PipelineOptions(rate=math.inf, backoff=Backoff(initial=0.05, maximum=0.2)),
                customer=CONTOSO,
                graph=graph,
                tokens=tokens,
                journal=journal,
                steps=[LedgerStep(ledger, hang=hang)],
            )
            rows = [as_validated(checked_row(n, f"stepped{n}@contoso.com"), marks) for n in range(2, 2 + count)]
            stats = await pipeline.run(rows, results.append)
        journal.end_run(counts=stats.counts, exit_code=0)
    shown = [{"upn": r.userPrincipalName, "status": r.status.value, "userId": r.userId} for r in results]
    print(
        json.dumps({"rows": shown, "requests": stats.requests, "step_requests": stats.step_requests}),
        flush=True,
    )


if __name__ == "__main__":
    url, journal_path, ledger, count = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    rest = sys.argv[5:]
    marks = {upn: (kind, user_id) for kind, upn, user_id in (arg.split(":") for arg in rest if ":" in arg)}
    rest = [arg for arg in rest if ":" not in arg]
    hang = (rest[0], rest[1]) if len(rest) > 1 else None
    asyncio.run(main(url, journal_path, ledger, count, hang, marks))
