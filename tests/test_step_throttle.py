"""The profile and manager steps' Graph writes report Graph's early throttling warning
(`x-ms-throttle-limit-percentage`) to the rate controller as creates do, so the run eases off before a 429
whichever write fills the tenant's window. Over real HTTP against the embedded sandbox, with the real journal."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bulkonboard.journal.store import Journal, open_journal
from bulkonboard.model import RowResult
from bulkonboard.sandbox.options import SandboxOptions
from bulkonboard.sending.pipeline import Pipeline, PipelineOptions, PipelineStats, Step
from bulkonboard.sending.profile import ManagerStep, ProfileStep
from bulkonboard.sending.retry import FixedRate
from bulkonboard.sheets.validation import CheckedRow

from .support import CONTOSO, SandboxService, checked_row, sandbox_service

pytestmark = pytest.mark.timeout(120)

WEI = "wei.zhang@contoso.com"  # in the sample data's Contoso


class HeardUsage(FixedRate):
    """No pacing (the sandbox's window is an hour: nothing waits); remembers each success's usage warning."""

    def __init__(self) -> None:
        super().__init__(math.inf)
        self.heard: list[float | None] = []

    def on_success(self, *, usage: float | None = None) -> None:
        self.heard.append(usage)


def rows() -> list[CheckedRow]:
    """Eight rows; the first has a profile and a manager, the second a profile."""
    made = [checked_row(n, f"paced{n}@contoso.com") for n in range(2, 10)]
    cells: list[dict[str, Any]] = [{"profile": (("jobTitle", "Lead"),), "manager": WEI}, {"profile": (("department", "Sales"),)}]
    for index, changes in enumerate(cells):
        made[index] = replace(made[index], user=replace(made[index].user, **changes))
    return made


async def run(
    svc: SandboxService, journal: Journal, steps: list[Step], controller: FixedRate
) -> tuple[list[RowResult], PipelineStats]:
    journal.begin_run(
        input_path="paced", input_sha256="-", customer=CONTOSO, correlation_id=str(uuid.uuid4())
    )
    results: list[RowResult] = []
    pipeline = Pipeline(
        svc.client,
        options=PipelineOptions(rate=math.inf, concurrency=1),
        customer=CONTOSO,
        graph=svc.graph,
        tokens=svc.tokens,
        journal=journal,
        steps=steps,
        rate_controller=controller,
    )
    stats = await pipeline.run(rows(), results.append)
    journal.end_run(counts=stats.counts, exit_code=0)
    return results, stats


async def test_profile_and_manager_writes_hand_graphs_usage_warning_to_the_rate_controller(
    tmp_path: Path,
) -> None:
    """Eight creates fill 8 of the tenant's 11 writes an hour (73 %: no warning); the next run of the journal
    sends the three step writes alone (82 %, 91 %, 100 %: each warned), and the controller hears all three."""
    options = SandboxOptions(throttle_warnings=True, customer_rate_limit=(11, 3600.0))
    async with sandbox_service(options) as svc:
        wei = svc.held()[WEI]
        with open_journal(tmp_path / "j.sqlite", service=svc.sandbox.url) as journal:
            creates = HeardUsage()
            _, first = await run(svc, journal, [], creates)
            steps = HeardUsage()
            steps_plan: list[Step] = [ProfileStep(svc.graph), ManagerStep(svc.graph, {CONTOSO: {WEI: wei}})]
            results, again = await run(svc, journal, steps_plan, steps)

    assert first.requests == 8 and [usage for usage in creates.heard if usage is not None] == []
    assert again.requests == 0 and again.step_requests == 3
    assert sorted(usage for usage in steps.heard if usage is not None) == pytest.approx([0.82, 0.91, 1.0])
    assert {result.status.value for result in results} == {"skipped"}  # ours already: only the steps were sent
