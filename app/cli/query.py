"""`sluice query`: ask the producer's table API and print the answer as a terminal table, JSON or CSV."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import orjson

from app.analytics.results import text_table
from app.core.tenants import dev_keys
from app.errors import ConfigError
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Query:
    table: str
    key: str | None = None
    start: str | None = None  # --from
    end: str | None = None  # --to
    top: int | None = None
    window: str | None = None
    format: str = "table"

    def path_and_params(self) -> tuple[str, dict[str, str]]:
        if self.top is not None:
            params = {"n": str(self.top)} | ({"window": self.window} if self.window else {})
            return f"/tables/{quote(self.table, safe='')}/top", params
        given = {"key": self.key, "from": self.start, "to": self.end}
        return f"/tables/{quote(self.table, safe='')}", {k: v for k, v in given.items() if v is not None}


async def query(settings: Settings, request: Query, url: str | None, api_key: str | None) -> int:
    base = url or f"http://{settings.producer.host}:{settings.producer.port}"
    key = api_key or next((k for k, _ in dev_keys(settings.keys.api_keys)), None)
    if key is None:
        raise ConfigError("no API key: pass --api-key or set SLUICE_API_KEYS", field="--api-key")
    path, params = request.path_and_params()
    accept = "application/json" if request.format == "json" else "text/csv"
    headers = {"X-API-Key": key, "Accept": accept}
    try:
        async with aiohttp.ClientSession() as http, http.get(base + path, params=params, headers=headers) as response:
            body = await response.read()
            status = response.status
    except aiohttp.ClientError as exc:
        print(f"sluice query: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        try:
            error = orjson.loads(body)["error"]
            where = f" ({error['field']})" if error.get("field") else ""
            print(f"sluice query: {status} {error['message']}{where}", file=sys.stderr)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            print(f"sluice query: {status} {body.decode(errors='replace')}", file=sys.stderr)
        return 1
    if request.format == "json":
        print(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode())
    elif request.format == "csv":
        sys.stdout.write(body.decode())
    else:
        sys.stdout.write(text_table(body.decode()))
    return 0
