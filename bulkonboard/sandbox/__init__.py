"""A local emulator of Partner Center (and the bit of Graph bulkonboard needs): the double in every test, the
embedded default of `make demo` and `--sandbox`, and the `bulkonboard sandbox` command.

It never imports the core (reader, validation, pipeline, partnercenter): it applies the service's rules on its
own, so a bug in our rules shows up as a failing test instead of being shared by the double.
"""

from .app import SandboxStats, build_app
from .auth import GRAPH_AUDIENCE, PARTNER_CENTER_AUDIENCE, TokenVerifier, static_token_verifier
from .codes import DUPLICATE_UPN_CODE, DUPLICATE_UPN_TEXT
from .data import CustomerData, DomainData, SandboxData, SandboxDataError, UserData, load_data, parse_data
from .data_directory import SkuData
from .options import SandboxOptions, parse_latency, parse_rate_limit
from .server import Sandbox, serve
from .store import Store

__all__ = [
    "DUPLICATE_UPN_CODE",
    "DUPLICATE_UPN_TEXT",
    "GRAPH_AUDIENCE",
    "PARTNER_CENTER_AUDIENCE",
    "CustomerData",
    "DomainData",
    "Sandbox",
    "SandboxData",
    "SandboxDataError",
    "SandboxOptions",
    "SandboxStats",
    "SkuData",
    "Store",
    "TokenVerifier",
    "UserData",
    "build_app",
    "load_data",
    "parse_data",
    "parse_latency",
    "parse_rate_limit",
    "serve",
    "static_token_verifier",
]
