"""What a run uses when nobody says otherwise: the services' addresses, the pace, where state is kept.

Kept apart from the stages that use them (the sending stage paces by them, auth keeps its token cache under the
state directory, the CLI shows them in `--help`) so that showing `--help` or starting a command loads none of
those stages, and each value is written down once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
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
    """Where a run keeps what it must remember across runs (journals, token cache): the platform's own place,
    from platformdirs (Linux: $XDG_STATE_HOME or ~/.local/state/bulkonboard; macOS: ~/Library/Application
    Support/bulkonboard; Windows: %LOCALAPPDATA%\\bulkonboard). XDG_STATE_HOME, when set, wins everywhere: a
    scheduler or a test that names it gets it on any platform."""
    explicit = os.environ.get("XDG_STATE_HOME")
    if explicit:
        return Path(explicit) / "bulkonboard"
    import platformdirs  # here, not at the top: `--help` never needs it

    return Path(platformdirs.user_state_dir("bulkonboard", appauthor=False))


def user_config_dir(environ: Mapping[str, str], home: Path | None = None) -> Path:
    """The folder of the user's config file: $XDG_CONFIG_HOME/bulkonboard, else ~/.config/bulkonboard on Linux
    (as before), else the platform's own (macOS: ~/Library/Application Support/bulkonboard; Windows:
    %APPDATA%\\bulkonboard)."""
    explicit = environ.get("XDG_CONFIG_HOME")
    if explicit or sys.platform.startswith("linux"):
        return Path(explicit or (home or Path.home()) / ".config") / "bulkonboard"
    import platformdirs

    return Path(platformdirs.user_config_dir("bulkonboard", appauthor=False))
