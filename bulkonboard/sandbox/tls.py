"""TLS for a local sign-in authority: MSAL only speaks https to an authority, so the sandbox makes a throwaway CA
and a certificate for the local hosts with `trustme`."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class Tls(NamedTuple):
    """The server side (an SSLContext for aiohttp's TCPSite) and the CA file the client is told to trust."""

    server_context: ssl.SSLContext
    ca_path: Path


def make_tls(directory: Path, hosts: Iterable[str] = ("127.0.0.1", "localhost", "::1")) -> Tls:
    """A throwaway CA and a server certificate for the local hosts; the CA is written to `directory/ca.pem`.

    Needs `trustme` (a test extra today: `bulkonboard sandbox --tls` needs it at run time too).
    """
    import trustme

    authority = trustme.CA(organization_name="bulkonboard sandbox")
    leaf = authority.issue_cert(*hosts)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_path))
    return Tls(server_context=context, ca_path=ca_path)
