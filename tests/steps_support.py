"""A made-up step for the plan-of-steps tests: it "stamps" a user by writing a line to a ledger file, the way a
license or profile step will change the user in the tenant. The ledger plays the service: a request id it has
seen is not applied twice (the MS-RequestId idempotency Partner Center gives), and `reconcile` reads it back.

A file, not a list, so that a run in another process (tests/steps_child.py, killed with SIGKILL) and the test
see the same ledger.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bulkonboard.model import Status
from bulkonboard.sending.pipeline import RowState, StepOutcome
from bulkonboard.sending.sender import Sender
from bulkonboard.service.partnercenter import Refused, TransportError


class LedgerStep:
    """`Step`: once per row after create. `refuse`: UPNs it refuses (400, for good); `lose_answer`: UPNs whose
    first answer is lost after the stamp was written; `hang`: ("before" | "after", UPN): says `reached` on stdout,
    then waits forever, before or after writing the stamp (the moment a kill -9 lands)."""

    name = "stamp"
    code = "stamp.failed"
    fails_row_as = Status.PARTIAL

    def __init__(
        self,
        ledger: Path,
        *,
        refuse: frozenset[str] = frozenset(),
        lose_answer: frozenset[str] = frozenset(),
        hang: tuple[str, str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.refuse = refuse
        self.lose_answer = set(lose_answer)
        self.hang = hang
        self.reached = asyncio.Event()  # set when it hangs, for a test in the same process

    def needed(self, row: RowState) -> bool:
        return True

    async def run(self, row: RowState, request_id: str, sender: Sender) -> StepOutcome:
        upn = row.user.upn_key

        async def stamp() -> None:
            if upn in self.refuse:
                raise Refused(
                    method="POST", url="ledger", request_id=request_id, status=400, description="no stamp"
                )
            await self._hang_if("before", upn)
            if not any(line["request_id"] == request_id for line in read_ledger(self.ledger)):
                with self.ledger.open("a", encoding="utf-8") as handle:
                    handle.write(
                        json.dumps({"upn": upn, "user_id": row.user_id, "request_id": request_id}) + "\n"
                    )
            await self._hang_if("after", upn)
            if upn in self.lose_answer:
                self.lose_answer.discard(upn)
                raise TransportError(
                    "the answer was lost", method="POST", url="ledger", request_id=request_id
                )

        await sender.request(stamp)
        return StepOutcome.done()

    async def reconcile(self, row: RowState, request_id: str, sender: Sender) -> bool | None:
        return any(line["upn"] == row.user.upn_key for line in read_ledger(self.ledger))

    async def _hang_if(self, moment: str, upn: str) -> None:
        if self.hang == (moment, upn):
            self.reached.set()
            print("reached", flush=True)
            await asyncio.Event().wait()


def read_ledger(ledger: Path) -> list[dict[str, str]]:
    if not ledger.exists():
        return []
    return [json.loads(line) for line in ledger.read_text("utf-8").splitlines() if line]
