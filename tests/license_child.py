"""A run with the real license steps, in a process of its own, against a standalone sandbox with SKUs: the test
kills it with SIGKILL between a row's create and its license, then runs it again.

    python -m tests.license_child URL JOURNAL ROWS [before|after UPN]

Each row asks for ENTERPRISEPACK. Prints `reached` when the license step of UPN hangs (before its request, or
after its answer came), then (if it ever ends) one JSON line: every row's status and licenses, and the run's
create and step requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sys
import uuid
from pathlib import Path

import aiohttp

from bulkonboard.journal.store import open_journal
from bulkonboard.model import RowResult
from bulkonboard.sending.licensing import LicenseBook, LicenseStep, license_steps
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions, RowState, StepOutcome
from bulkonboard.sending.retry import Backoff
from bulkonboard.sending.sender import Sender
from bulkonboard.service.partnercenter import GraphClient, PartnerCenterClient, StaticTokens
from bulkonboard.sheets.facts import CustomerFacts
from bulkonboard.sheets.validation import CheckedRow

from .support import CONTOSO, checked_row


class HangingLicenseStep(LicenseStep):
    """The real step, hanging for one UPN before its request or after its answer (the moment a kill lands)."""

    hang: tuple[str, str] | None = None

    async def run(self, row: RowState, request_id: str, sender: Sender) -> StepOutcome:
        await self._hang_if("before", row.user.upn_key)
        outcome = await super().run(row, request_id, sender)
        await self._hang_if("after", row.user.upn_key)
        return outcome

    async def _hang_if(self, moment: str, upn: str) -> None:
        if self.hang == (moment, upn):
            print("reached", flush=True)
            await asyncio.Event().wait()


def rows(count: int) -> list[CheckedRow]:
    made = [checked_row(n, f"licensed{n}@contoso.com") for n in range(2, 2 + count)]
    return [
        dataclasses.replace(r, user=dataclasses.replace(r.user, licenses=("ENTERPRISEPACK",))) for r in made
    ]


async def main(url: str, journal_path: Path, count: int, hang: tuple[str, str] | None) -> None:
    results: list[RowResult] = []
    with open_journal(journal_path, service=url) as journal:
        journal.begin_run(
            input_path="licensed", input_sha256="-", customer=CONTOSO, correlation_id=str(uuid.uuid4())
        )
        async with aiohttp.ClientSession() as session:
            tokens = StaticTokens("sandbox")
            client = PartnerCenterClient(session, tokens, base_url=url, correlation_id=str(uuid.uuid4()))
            book = LicenseBook()  # the SKUs read once, as the runner reads them with the facts
            book.learn(
                {CONTOSO: CustomerFacts(CONTOSO, subscribed_skus=await client.subscribed_skus(CONTOSO))}
            )
            group1, group2 = license_steps(client, book)
            hanging = HangingLicenseStep(group1.group, client, book)
            hanging.hang = hang
            pipeline = Pipeline(
                client,
                options=PipelineOptions(rate=math.inf, backoff=Backoff(initial=0.05, maximum=0.2)),
                customer=CONTOSO,
                graph=GraphClient(session, tokens, graph_url=f"{url}/graph/{{tenant}}"),
                tokens=tokens,
                journal=journal,
                to_result=lambda c: RowResult(
                    c.user.row,
                    c.user.userPrincipalName,
                    c.status,
                    userId=c.existing_user_id,
                    problems=c.problems,
                ),
                steps=[hanging, group2],
            )
            stats = await pipeline.run(rows(count), results.append)
        journal.end_run(counts=stats.counts, exit_code=0)
    shown = [
        {"upn": r.userPrincipalName, "status": r.status.value, "licenses": r.display.get("licenses", "")}
        for r in results
    ]
    print(
        json.dumps({"rows": shown, "requests": stats.requests, "step_requests": stats.step_requests}),
        flush=True,
    )


if __name__ == "__main__":
    url, journal_path, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    hang = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else None
    asyncio.run(main(url, journal_path, count, hang))
