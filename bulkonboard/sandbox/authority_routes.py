"""The sign-in authority's endpoints (see `authority` for what they serve and why): OpenID configuration,
device code, token (refresh_token, device_code, client_credentials), and the device login page."""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import secrets
import string
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aiohttp import web

from .signin import (
    DEFAULT_USER,
    DEVICE_CODE_GRANT,
    OIDC_SCOPES,
    RESOURCES,
    Client,
    DeviceCode,
    Refusal,
    SignIn,
    TokenRequest,
    b64,
    tenant_not_found,
    unknown_client,
)

if TYPE_CHECKING:
    from .authority import AuthorityState


def add_authority_routes(app: web.Application, state: AuthorityState) -> None:
    """Mount the authority at the root of `app` (MSAL takes the first path segment as the tenant, so it cannot
    live under a prefix). The paths cannot collide with `/v1/...` or `/graph/{tenant}/...`."""
    authority = _Authority(state)
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", authority.openid_configuration)
    app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", authority.device_code)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", authority.token)
    app.router.add_get("/devicelogin", authority.device_login_page)
    app.router.add_post("/devicelogin", authority.device_login_approve)


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


class _Authority:
    def __init__(self, state: AuthorityState) -> None:
        self.state = state

    async def openid_configuration(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        if not self.state.knows_tenant(tenant):
            return tenant_not_found(tenant).response()
        base = f"{_base_url(request)}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["HS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "grant_types_supported": ["refresh_token", DEVICE_CODE_GRANT, "client_credentials"],
                "tenant_region_scope": "EU",
            }
        )

    async def device_code(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await request.post()
        try:
            if not self.state.knows_tenant(tenant):
                raise tenant_not_found(tenant)
            client_id = str(form.get("client_id", ""))
            if client_id not in self.state._clients:
                raise unknown_client(client_id, tenant)
            scopes = _split_scopes(str(form.get("scope", "")))
            _resource_of(scopes, tenant)
        except Refusal as refusal:
            return refusal.response()
        user_code = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(9))
        code = DeviceCode(
            device_code=secrets.token_urlsafe(32),
            user_code=user_code,
            client_id=client_id,
            tenant=tenant,
            scopes=tuple(scopes),
            expires_at=self.state.clock() + self.state.device_expires_in,
        )
        self.state._device_codes[code.device_code] = code
        self.state._notify()
        verification_uri = f"{_base_url(request)}/devicelogin"
        return web.json_response(
            {
                "user_code": user_code,
                "device_code": code.device_code,
                "verification_uri": verification_uri,
                "expires_in": self.state.device_expires_in,
                "interval": self.state.device_interval,
                "message": (
                    f"To sign in, use a web browser to open the page {verification_uri} and enter the code "
                    f"{user_code} to authenticate."
                ),
            }
        )

    async def token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        basic_id, basic_secret = _basic_credentials(request)
        client_id = fields.get("client_id") or basic_id or ""
        grant_type = fields.get("grant_type", "")
        try:
            response = self._token(tenant, grant_type, client_id, basic_secret, fields)
        except Refusal as refusal:
            self._record(TokenRequest(tenant, grant_type, client_id, refusal.status, refusal.code))
            return refusal.response()
        self._record(TokenRequest(tenant, grant_type, client_id, 200))
        return web.json_response(response, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _record(self, request: TokenRequest) -> None:
        self.state.requests.append(request)
        self.state._notify()

    def _token(
        self, tenant: str, grant_type: str, client_id: str, basic_secret: str | None, fields: dict[str, str]
    ) -> dict[str, Any]:
        state = self.state
        if not state.knows_tenant(tenant):
            raise tenant_not_found(tenant)
        client = state._clients.get(client_id)
        if client is None:
            raise unknown_client(client_id, tenant)
        _authenticate(client, fields.get("client_secret") or basic_secret)
        scopes = _split_scopes(fields.get("scope", ""))
        if grant_type == "refresh_token":
            return self._refresh(tenant, client, scopes, fields)
        if grant_type == DEVICE_CODE_GRANT:
            return self._device(tenant, client, fields)
        if grant_type == "client_credentials":
            return self._client_credentials(tenant, client, scopes, fields)
        raise Refusal(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )

    def _refresh(
        self, tenant: str, client: Client, scopes: list[str], fields: dict[str, str]
    ) -> dict[str, Any]:
        sign_in = self.state._refresh_tokens.get(fields.get("refresh_token", ""))
        if sign_in is None or sign_in.client_id != client.client_id:
            raise Refusal(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if sign_in.lapsed:
            issued = datetime.fromtimestamp(sign_in.issued_at, UTC).strftime("%m/%d/%Y %H:%M:%S")
            raise Refusal(
                400,
                "invalid_grant",
                700082,
                f"The refresh token has expired due to inactivity. The token was issued on {issued} and was "
                "inactive for 90.00:00:00.",
            )
        self._check_consent(tenant, client)
        return self._user_tokens(tenant, client, sign_in, scopes, fields)

    def _device(self, tenant: str, client: Client, fields: dict[str, str]) -> dict[str, Any]:
        code = self.state._device_codes.get(fields.get("device_code", ""))
        if code is None or code.client_id != client.client_id or code.redeemed:
            raise Refusal(400, "invalid_grant", 70000, "The provided value for the device code is not valid.")
        code.polls += 1
        if code.declined:
            raise Refusal(400, "authorization_declined", 70000, "The user declined to sign in.")
        if self.state.clock() >= code.expires_at:
            raise Refusal(400, "expired_token", 70020, "The provided device code has expired.")
        if code.approved_by is None:
            raise Refusal(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        self._check_consent(tenant, client)
        code.redeemed = True
        sign_in = self.state._new_sign_in(client.client_id, code.tenant, code.approved_by)
        return self._user_tokens(tenant, client, sign_in, list(code.scopes), fields)

    def _client_credentials(
        self, tenant: str, client: Client, scopes: list[str], fields: dict[str, str]
    ) -> dict[str, Any]:
        if client.secret is None:
            raise Refusal(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
            )
        key = tenant.casefold()
        if (key, None) in self.state._no_consent or (key, client.client_id) in self.state._no_consent:
            # Entra's answer when the app has no service principal in the tenant (nobody consented there). The
            # docs do not say what an app consented without application permissions gets: a token whose `roles`
            # are empty, which Graph then refuses (403); the sandbox's tokens carry no roles either way.
            raise Refusal(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client.client_id}' was not found in the directory '{tenant}'. This "
                "can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant.",
            )
        resource = _resource_of(scopes, tenant)
        now = int(self.state.clock())
        claims = {
            "tid": tenant,
            "aud": resource,
            "roles": [],
            "appid": client.client_id,
            "iat": now,
            "exp": now + self.state.expires_in,
            "jti": str(uuid.uuid4()),
        }
        return {
            "token_type": "Bearer",
            "expires_in": self.state.expires_in,
            "ext_expires_in": self.state.expires_in,
            "access_token": self.state._access_token(claims),
        }

    def _check_consent(self, tenant: str, client: Client) -> None:
        key = tenant.casefold()
        if (key, None) in self.state._no_consent or (key, client.client_id) in self.state._no_consent:
            raise Refusal(
                400,
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{client.client_id}'. Send an interactive authorization request for this user and resource.",
            )

    def _user_tokens(
        self, tenant: str, client: Client, sign_in: SignIn, scopes: list[str], fields: dict[str, str]
    ) -> dict[str, Any]:
        resource = _resource_of(scopes, tenant)
        state = self.state
        now = int(state.clock())
        resource_scopes = [scope for scope in scopes if scope not in OIDC_SCOPES]
        access = {
            "tid": tenant,
            "aud": resource,
            "scp": " ".join(scope.rsplit("/", 1)[-1] for scope in resource_scopes),
            "oid": sign_in.oid,
            "upn": sign_in.username,
            "appid": client.client_id,
            "iat": now,
            "exp": now + state.expires_in,
            "jti": str(uuid.uuid4()),
        }
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(scopes),
            "expires_in": state.expires_in,
            "ext_expires_in": state.expires_in,
            "access_token": state._access_token(access),
        }
        if "offline_access" in scopes:
            answer["refresh_token"] = state._new_refresh_token(sign_in)
        if "openid" in scopes:
            answer["id_token"] = state._id_token(
                {
                    "aud": client.client_id,
                    "iss": f"sandbox/{tenant}/v2.0",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 3600,
                    "oid": sign_in.oid,
                    "sub": sign_in.oid,
                    "tid": tenant,
                    "preferred_username": sign_in.username,
                    "name": sign_in.username.split("@", 1)[0],
                    "ver": "2.0",
                }
            )
        if fields.get("client_info") == "1":
            info = {"uid": sign_in.oid, "utid": sign_in.home_tenant}
            answer["client_info"] = b64(json.dumps(info).encode())
        return answer

    # A page for a person approving a code in a browser, so a sandbox started by hand can be signed in to.

    async def device_login_page(self, request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text=(
                "<!doctype html><title>Sandbox sign-in</title><h1>Sandbox sign-in</h1>"
                '<form method="post"><label>Code <input name="user_code" autofocus></label> '
                f'<label>User <input name="username" value="{html.escape(DEFAULT_USER)}"></label> '
                "<button>Sign in</button></form>"
            ),
        )

    async def device_login_approve(self, request: web.Request) -> web.Response:
        form = await request.post()
        user_code = str(form.get("user_code", ""))
        username = str(form.get("username", "")).strip() or DEFAULT_USER
        try:
            self.state.approve_device_code(user_code, username)
        except KeyError:
            return web.Response(status=400, content_type="text/html", text="<p>Unknown or expired code.</p>")
        return web.Response(content_type="text/html", text="<p>Signed in. You can close this window.</p>")


def _authenticate(client: Client, presented: str | None) -> None:
    if client.secret is None:
        if presented:
            raise Refusal(
                401,
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
            )
        return
    if not presented:
        raise Refusal(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if not hmac.compare_digest(presented.encode(), client.secret.encode()):
        raise Refusal(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{client.client_id}'.",
        )
    if client.secret_expired:
        raise Refusal(
            401,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{client.client_id}' are expired.",
        )


def _basic_credentials(request: web.Request) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, binascii.Error):
        return None, None
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


def _split_scopes(scope: str) -> list[str]:
    return [part for part in scope.split() if part]


def _resource_of(scopes: list[str], tenant: str) -> str:
    """The one resource a request's scopes name: `https://graph.microsoft.com/.default` -> Graph."""
    resources = {scope.rsplit("/", 1)[0].rstrip("/") for scope in scopes if scope not in OIDC_SCOPES}
    if len(resources) != 1:
        raise Refusal(
            400,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid: name exactly one resource.",
        )
    resource = resources.pop()
    if resource not in RESOURCES:
        raise Refusal(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named {tenant}.",
        )
    return resource
