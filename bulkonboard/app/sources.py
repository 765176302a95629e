"""Where a command's facts and users come from: one mode per kind of source, one factory per mode.

Four modes, picked once from the command line by `SourceChoice.pick`:

- `PARTNER_CENTER`: the real service, with a token given (`--access-token`) or the secure application model's
  sign-in (MSAL, from the configuration file or the environment);
- `EMBEDDED_SANDBOX`: an emulator started for this command alone (`--sandbox`);
- `SANDBOX_URL`: a standalone sandbox started with `bulkonboard sandbox` (`--sandbox-url`);
- `DOMAINS_FILE`: offline, domain facts from a CSV (`--domains` alone): enough to validate, never to create.

The embedded sandbox is handed in by the CLI (`EmulatorStarter`), so that this layer, like every stage below
the CLI, never imports the emulator: the product cannot come to depend on its own test double. The HTTP client and
aiohttp are imported only by the factories that need them, so that picking a source (or failing to) costs no
start-up time.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..defaults import GRAPH_URL, PARTNER_CENTER_URL
from ..errors import AuthError, InputError
from ..sheets.facts import DomainsFile, FactsSource

if TYPE_CHECKING:
    from ..protocols import TokenProvider


class SourceMode(Enum):
    PARTNER_CENTER = "Partner Center"
    EMBEDDED_SANDBOX = "embedded sandbox"
    SANDBOX_URL = "sandbox at a URL"
    DOMAINS_FILE = "domains file"


@dataclass(frozen=True)
class Emulator:
    """A running emulator: its URL, and the data file it serves (what names its journal's service)."""

    url: str
    data: Path


#: Starts the embedded sandbox for one command (given its --sandbox-data, or None for the default data).
EmulatorStarter = Callable[[Path | None], AbstractAsyncContextManager[Emulator]]


@dataclass(frozen=True)
class SourceChoice:
    """The source options of a command, checked and resolved to one mode."""

    mode: SourceMode
    domains: Path | None = None
    sandbox_data: Path | None = None
    sandbox_url: str = ""
    access_token: str | None = None
    ca_bundle: Path | None = None
    base_url: str = PARTNER_CENTER_URL
    graph_url: str = GRAPH_URL
    start_emulator: EmulatorStarter | None = None
    via: str = "partnercenter"  # --via: "graph" reads the licenses (SKUs) from Graph, which then assigns them

    @classmethod
    def pick(
        cls,
        *,
        domains: Path | None = None,
        sandbox: bool = False,
        sandbox_data: Path | None = None,
        sandbox_url: str | None = None,
        access_token: str | None = None,
        ca_bundle: Path | None = None,
        base_url: str = PARTNER_CENTER_URL,
        graph_url: str = GRAPH_URL,
        start_emulator: EmulatorStarter | None = None,
        via: str | None = None,
    ) -> SourceChoice:
        """One mode from the options, or InputError (exit 2) with the fix, before anything is opened."""
        base_url = checked_url(base_url, "--base-url", example=PARTNER_CENTER_URL)
        graph_url = checked_url(graph_url, "--graph-url", example=GRAPH_URL)
        if sandbox_url is not None:
            sandbox_url = checked_url(sandbox_url, "--sandbox-url", example="http://127.0.0.1:8080")
        if sandbox and sandbox_url:
            raise InputError("give either --sandbox or --sandbox-url, not both")
        if sandbox_data and not sandbox:
            raise InputError("--sandbox-data goes with --sandbox")
        if sandbox:
            mode = SourceMode.EMBEDDED_SANDBOX
        elif sandbox_url:
            mode = SourceMode.SANDBOX_URL
        elif domains and not access_token:
            mode = SourceMode.DOMAINS_FILE
        else:
            mode = SourceMode.PARTNER_CENTER
        return cls(
            mode=mode,
            domains=domains,
            sandbox_data=sandbox_data,
            sandbox_url=sandbox_url or "",
            access_token=access_token,
            ca_bundle=ca_bundle,
            base_url=base_url,
            graph_url=graph_url,
            start_emulator=start_emulator,
            via=(via or "partnercenter").casefold(),
        )

    @property
    def offline(self) -> bool:
        """Nothing is asked of a service: the domains file alone."""
        return self.mode is SourceMode.DOMAINS_FILE

    @property
    def token_on_command_line_matters(self) -> bool:
        """A token for the real service is a secret; the sandbox's is not."""
        return self.mode is SourceMode.PARTNER_CENTER and bool(self.access_token)

    @property
    def name(self) -> str:
        """The source as the summary and the results workbook name it; with --domains beside a service, that the
        domains came from the file (it is honoured: the service is asked for users only)."""
        if self.mode is SourceMode.DOMAINS_FILE:
            return f"domains file {self.domains}"
        if self.mode is SourceMode.SANDBOX_URL:
            name = f"sandbox at {self.sandbox_url}"
        elif self.mode is SourceMode.EMBEDDED_SANDBOX:
            name = "embedded sandbox"
        else:
            name = f"Partner Center at {self.base_url}"
        return f"{name}, domains from {self.domains}" if self.domains else name


@dataclass
class Connection:
    """What a command talks to: a facts source and, unless offline, the Partner Center client.

    `service_url` names the service a journal belongs to (Partner Center's base URL, or the embedded sandbox's
    data file: its port changes per start). `embedded`: the service lives and dies with the command, and so does
    the journal that run's policy gives it."""

    facts: FactsSource
    source_name: str
    partner_center: Any = None  # sending.pipeline.UserService
    graph: Any = None  # sending.pipeline.UserDirectory
    tokens: TokenProvider | None = None
    service_url: str = ""
    embedded: bool = False


def connect(choice: SourceChoice, *, correlation_id: str) -> AbstractAsyncContextManager[Connection]:
    """Open what the choice names, for as long as the `async with`; an embedded sandbox lives exactly as long."""
    return _FACTORIES[choice.mode](choice, correlation_id)


@asynccontextmanager
async def _domains_file_only(choice: SourceChoice, correlation_id: str) -> AsyncIterator[Connection]:
    assert choice.domains is not None
    yield Connection(facts=DomainsFile(choice.domains), source_name=choice.name)


@asynccontextmanager
async def _embedded_sandbox(choice: SourceChoice, correlation_id: str) -> AsyncIterator[Connection]:
    from ..service.partnercenter import StaticTokens

    if choice.start_emulator is None:  # a caller that offers --sandbox must say how to start one
        raise InputError("this command cannot start an embedded sandbox: give --sandbox-url URL")
    async with choice.start_emulator(choice.sandbox_data) as emulator, AsyncExitStack() as stack:
        yield await _clients(
            stack, choice, correlation_id,
            base_url=emulator.url, graph_url=f"{emulator.url}/graph/{{tenant}}", tokens=StaticTokens("sandbox"),
            ca_bundle=choice.ca_bundle, service_url=f"sandbox:embedded:{os.path.realpath(emulator.data)}",
        )  # fmt: skip


@asynccontextmanager
async def _sandbox_at_url(choice: SourceChoice, correlation_id: str) -> AsyncIterator[Connection]:
    from ..service.partnercenter import StaticTokens

    base_url = choice.sandbox_url.rstrip("/")
    tokens = StaticTokens(choice.access_token or "sandbox")  # the sandbox's token serves Graph too
    async with AsyncExitStack() as stack:
        yield await _clients(
            stack, choice, correlation_id,
            base_url=base_url, graph_url=f"{base_url}/graph/{{tenant}}", tokens=tokens, ca_bundle=choice.ca_bundle,
        )  # fmt: skip


@asynccontextmanager
async def _partner_center(choice: SourceChoice, correlation_id: str) -> AsyncIterator[Connection]:
    """A token given (Partner Center's; Graph's from BULKONBOARD_GRAPH_TOKEN), or the secure application model:
    MSAL, from the configuration file or the environment. Graph is asked for domains unless --domains says them."""
    async with AsyncExitStack() as stack:
        tokens: Any
        ca_bundle = choice.ca_bundle
        if choice.access_token:
            from ..service.partnercenter import StaticTokens

            graph_token = os.environ.get("BULKONBOARD_GRAPH_TOKEN") or None
            if not choice.domains and not graph_token:
                raise AuthError(
                    "Graph needs its own token for the customer's tenant to list domains: set "
                    "BULKONBOARD_GRAPH_TOKEN, or give --domains FILE"
                )
            tokens = StaticTokens(choice.access_token, graph_token)
            graph_url = choice.graph_url if graph_token else None
        else:
            from ..auth.config import load_config
            from ..auth.tokens import MsalTokens

            config = load_config()
            ca_bundle = ca_bundle or config.ca_bundle
            if config.app_only:
                yield await _app_only(stack, choice, correlation_id, config, ca_bundle)
                return
            tokens = MsalTokens(config)
            stack.callback(tokens.close)
            graph_url = None if choice.domains else choice.graph_url
        yield await _clients(
            stack, choice, correlation_id,
            base_url=choice.base_url, graph_url=graph_url, tokens=tokens, ca_bundle=ca_bundle,
        )  # fmt: skip


async def _app_only(
    stack: AsyncExitStack, choice: SourceChoice, correlation_id: str, config: Any, ca_bundle: Path | None
) -> Connection:
    """An administrator of their own tenant: the app's own Graph token (auth/apponly.py), Graph for everything
    (domains, users, licenses, creates), no Partner Center. The journal belongs to Graph at `--graph-url`."""
    from ..auth.apponly import AppOnlyTokens

    tokens = AppOnlyTokens(config)
    stack.callback(tokens.close)
    graph_url = choice.graph_url
    name = f"Microsoft Graph at {graph_url.replace('/{tenant}', '')} (app-only, tenant {config.tenant_id})"
    return await _clients(
        stack, choice, correlation_id,
        base_url="", graph_url=graph_url, tokens=tokens, ca_bundle=ca_bundle, service_url=graph_url, source_name=name,
    )  # fmt: skip


async def _clients(
    stack: AsyncExitStack,
    choice: SourceChoice,
    correlation_id: str,
    *,
    base_url: str,
    graph_url: str | None,
    tokens: Any,
    ca_bundle: Path | None,
    service_url: str = "",
    source_name: str = "",
) -> Connection:
    """The HTTP session and the clients on it, closed with `stack`; facts from the service (and the domains
    file, when given, for the domains). No `base_url`: no Partner Center (app-only, Graph alone)."""
    import aiohttp

    from ..service.partnercenter import GraphClient, PartnerCenterClient, ServiceFacts

    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
    connector = aiohttp.TCPConnector(ssl=_ssl_context(ca_bundle)) if ca_bundle else None
    session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout, connector=connector))
    partner_center = (
        PartnerCenterClient(session, tokens, base_url=base_url, correlation_id=correlation_id) if base_url else None
    )
    graph = GraphClient(session, tokens, graph_url=graph_url) if graph_url else None
    domains_file = DomainsFile(choice.domains) if choice.domains else None
    return Connection(
        facts=ServiceFacts(partner_center, graph, domains_file=domains_file, skus_from_graph=choice.via == "graph"),
        source_name=source_name or choice.name,
        partner_center=partner_center,
        graph=graph,
        tokens=tokens,
        service_url=service_url or base_url,
        embedded=choice.mode is SourceMode.EMBEDDED_SANDBOX,
    )


_FACTORIES: dict[SourceMode, Callable[[SourceChoice, str], AbstractAsyncContextManager[Connection]]] = {
    SourceMode.PARTNER_CENTER: _partner_center,
    SourceMode.EMBEDDED_SANDBOX: _embedded_sandbox,
    SourceMode.SANDBOX_URL: _sandbox_at_url,
    SourceMode.DOMAINS_FILE: _domains_file_only,
}


def _ssl_context(ca_bundle: Path) -> ssl.SSLContext:
    """Trust the system's CAs and this bundle too (a corporate proxy's CA, or the sandbox's test CA)."""
    if not ca_bundle.is_file():
        raise InputError(f"{ca_bundle}: no such CA bundle (--ca-bundle / BULKONBOARD_CA_BUNDLE)")
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except (ssl.SSLError, ValueError) as exc:
        raise InputError(f"{ca_bundle}: not a PEM bundle of CA certificates ({exc})") from None
    return context


_SCHEME = re.compile(r"^([^:/?#]*)://")
_LOCAL_HOSTS = ("localhost", "127.", "[::1]", "0.0.0.0")
#: The user info of a URL (`user:password@` before the host), with or without a scheme.
_USER_INFO = re.compile(r"^((?:[^:/?#]*://)?)[^/?#@]*@")


def checked_url(value: str, option: str, *, example: str) -> str:
    """A service URL as aiohttp needs it (http or https, a host, a numeric port), refused up front with the fix:
    a URL typo must never reach the run (it became a journal for `ht!tp://x`, then an unexpected ValueError).

    A URL never carries a user name or password: the services take bearer tokens only, and the URL is the journal's
    service identity and shows in lines and logs. So every line here shows it with its user info blotted out."""
    url = value.strip()
    masked = _USER_INFO.sub(r"\1***@", url)
    shown = f"{option} {masked!r}"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InputError(f"{shown}: a URL has no spaces or control characters; e.g. {option} {example}")
    scheme = _SCHEME.match(url)
    if scheme is None:
        if not url or url.startswith("/"):
            raise InputError(f"{shown}: not a URL; e.g. {option} {example}")
        bare = _USER_INFO.sub("", url)  # the fix shown is one that passes: without user info
        prefix = "http://" if bare.lower().startswith(_LOCAL_HOSTS) else "https://"
        raise InputError(f"{shown}: add {prefix}, as in {option} {prefix}{bare}")
    if scheme.group(1).lower() not in ("http", "https"):
        raise InputError(f"{shown}: the URL must start with http:// or https://; e.g. {option} {example}")
    parts = urlsplit(url.replace("{tenant}", "tenant"))
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise InputError(f"{shown}: the port must be a number from 1 to 65535; e.g. {option} {example}") from None
    if not parts.hostname:
        raise InputError(f"{shown}: the URL names no host; e.g. {option} {example}")
    if masked != url:
        raise InputError(
            f"{shown}: a service URL carries no user name or password (sign-in is by token); e.g. {option} {example}"
        )
    return url
