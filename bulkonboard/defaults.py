"""What a run uses when nobody says otherwise: the services' addresses, the pace, where state is kept.

Kept apart from the stages that use them (the sending stage paces by them, auth keeps its token cache under the
state directory, the CLI shows them in `--help`) so that showing `--help` or starting a command loads none of
those stages, and each value is written down once.
"""

from __future__ import annotations

import os
from pathlib import Path

PARTNER_CENTER_URL = "https://api.partnercenter.microsoft.com"
GRAPH_URL = "https://graph.microsoft.com"

#: Requests in flight at most (`--concurrency`): a cap, not the setting. A run keeps as many in flight as its pace
#: needs at the latency seen (sending/concurrency.py): 5 at 20 users/s and 250 ms answers, about 75 at 3 s. The cap
#: leaves room for that at Partner Center's slowest and for several customers at once.
DEFAULT_CONCURRENCY = 256
#: Users per second a run starts from when no --rate is given. Partner Center publishes no figure for
#: creating users; Graph allows about 20 identity writes a second per app and tenant, so a quarter of that
#: leaves room for other tools working on the same tenant, and the controller climbs from there.
DEFAULT_RATE = 5.0
#: Attempts per row for failures that count (5xx, no answer); a 429 does not count (see `retry.PauseGate`).
DEFAULT_ATTEMPTS = 5


def state_dir() -> Path:
    """XDG's state directory: what a run must remember across runs (journals, token cache)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bulkonboard"
