"""POST /login: an API key, sent as {"refreshToken"}, exchanged for a short-lived access token."""

from __future__ import annotations

from aiohttp import web

from app.core import tokens
from app.core.fields import reject_unknown, require_object, text
from app.core.tenants import hash_key, key_id
from app.errors import SluiceError, Unauthorized, ValidationError
from app.producer.http import CONTEXT, error_response, json_response, not_kept, parse_json, read_body

FIELD = "refreshToken"
MAX_BODY_BYTES = 16 * 1024  # {"refreshToken": <key>} and nothing else
MAX_KEY_LENGTH = 1024


def add_routes(app: web.Application) -> None:
    # not_kept: a refused login body holds an API key, which must not be copied onto a dead-letter topic.
    app.router.add_post("/login", not_kept(login))


async def login(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    keys = context.settings.keys
    if not keys.token_secret:
        # Not Unavailable: its Retry-After would promise that trying again helps.
        disabled = SluiceError(
            "access tokens are off on this server: set SLUICE_TOKEN_SECRET, or send the API key on every request",
            field="SLUICE_TOKEN_SECRET",
            code="tokens_disabled",
        )
        return error_response(503, disabled)
    body = require_object(parse_json(request, await read_body(request, MAX_BODY_BYTES)), "body")
    reject_unknown(body, frozenset({FIELD}))
    if body.get(FIELD) is None:
        raise ValidationError("is required: the API key to log in with", field=FIELD, code="validation.required")
    key = text(body[FIELD], FIELD, MAX_KEY_LENGTH)
    try:
        principal = context.keyring.principal_for(key)
    except Unauthorized:
        raise Unauthorized("unknown API key", field=FIELD, code="invalid_api_key") from None
    issued = tokens.issue(key_id(hash_key(key)), principal.tenant, keys.token_secret, ttl_s=keys.token_ttl_s)
    return json_response(200, {"accessToken": issued.token, "expiresIn": keys.token_ttl_s})
