"""`sluice dlq list|replay`: a tenant's refused input through the producer's HTTP API (GET /dlq, POST /dlq/replay)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

from app.core.tenants import dev_keys
from app.errors import ConfigError, ValidationError
from app.settings import Settings

PAGE = 1000  # dead letters asked for at once when listing
REPLAY_PAGE = 200  # dead letters replayed per request: each answer moves the progress line on
TIMEOUT_S = 120.0


class Refused(Exception):
    """The producer answered with an error, or could not be reached; the message says which."""


@dataclass(frozen=True, slots=True)
class Filter:
    reason: str | None = None
    start: str | None = None  # --from
    end: str | None = None  # --to
    ids: tuple[str, ...] = ()

    def as_body(self) -> dict[str, Any]:
        given: dict[str, Any] = {"reason": self.reason, "from": self.start, "to": self.end}
        if self.ids:
            given["ids"] = list(self.ids)
        return {name: value for name, value in given.items() if value is not None}


def api(settings: Settings, url: str | None, key: str | None) -> tuple[str, str]:
    """The producer's base URL and the key to send: --key, else SLUICE_API_KEY, else the first of SLUICE_API_KEYS."""
    base = (url or f"http://{settings.producer.host}:{settings.producer.port}").rstrip("/")
    chosen = key or settings.keys.api_key or next((k for k, _ in dev_keys(settings.keys.api_keys)), None)
    if not chosen:
        raise ConfigError("no API key: pass --key or set SLUICE_API_KEY", field="--key")
    return base, chosen


def patch_of(text: str | None) -> tuple[bool, Any]:
    """--patch: JSON text, or @file holding it; (whether one was given, the patch)."""
    if text is None:
        return False, None
    try:
        raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
        return True, orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValidationError(f"--patch: not JSON (or @file of JSON): {exc}", field="--patch") from None


async def list_letters(
    settings: Settings,
    chosen: Filter,
    *,
    limit: int | None,
    newest: bool,
    url: str | None,
    key: str | None,
    out: TextIO = sys.stdout,
) -> int:
    """Print the dead letters as JSON lines, page after page, up to `limit` of them (None: all)."""
    base, api_key = api(settings, url, key)
    params = {name: value for name, value in chosen.as_body().items() if name != "ids"}
    if newest:
        params["order"] = "newest"
    printed = 0
    async with _session(api_key) as http:
        try:
            while limit is None or printed < limit:
                page = await _call(http, "GET", f"{base}/dlq", params={**params, "limit": str(_page(limit, printed))})
                for record in page["records"]:
                    out.write(orjson.dumps(record).decode() + "\n")
                printed += len(page["records"])
                if not page["more"]:
                    break
                params["after"] = page["cursor"]
        except Refused as exc:
            print(f"sluice dlq list: {exc}", file=sys.stderr)
            return 1
    return 0


async def replay(
    settings: Settings,
    chosen: Filter,
    *,
    patch: tuple[bool, Any],
    dry_run: bool,
    url: str | None,
    key: str | None,
    out: TextIO = sys.stdout,
    progress: TextIO = sys.stderr,
) -> int:
    """Replay page after page with a progress line on stderr; print the totals and what stays refused as JSON."""
    base, api_key = api(settings, url, key)
    body: dict[str, Any] = {"filter": chosen.as_body(), "dry_run": dry_run}
    if patch[0]:
        body["patch"] = patch[1]
    if not chosen.ids:
        body["limit"] = REPLAY_PAGE
    totals: dict[str, Any] = {"replayed": 0, "still_refused": [], "matched": 0}
    started = time.monotonic()
    async with _session(api_key) as http:
        try:
            while True:
                page = await _call(http, "POST", f"{base}/dlq/replay", json=body)
                totals["replayed"] += page["replayed"]
                totals["matched"] += page["matched"]
                totals["still_refused"].extend(page["still_refused"])
                _progress(progress, totals, time.monotonic() - started, dry_run)
                if not page.get("more"):
                    break
                body["after"] = page["cursor"]
        except Refused as exc:
            progress.write("\n" if progress.isatty() else "")
            print(f"sluice dlq replay: {exc}", file=sys.stderr)
            return 1
    if progress.isatty():
        progress.write("\n")
    out.write(orjson.dumps({**totals, "dry_run": dry_run}).decode() + "\n")
    return 0


def _page(limit: int | None, printed: int) -> int:
    return PAGE if limit is None else min(PAGE, limit - printed)


def _progress(stream: TextIO, totals: dict[str, Any], elapsed: float, dry_run: bool) -> None:
    rate = totals["matched"] / elapsed if elapsed > 0 else 0.0
    verb = "would replay" if dry_run else "replayed"
    line = (
        f"{verb} {totals['replayed']} events of {totals['matched']} dead letters, "
        f"{len(totals['still_refused'])} still refused ({rate:.0f} dead letters/s)"
    )
    # On a terminal one line is rewritten in place; in a log, a line per page.
    stream.write(f"\r{line}" if stream.isatty() else f"{line}\n")
    stream.flush()


def _session(api_key: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"X-API-Key": api_key}, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S), raise_for_status=False
    )


async def _call(http: aiohttp.ClientSession, method: str, url: str, **options: Any) -> dict[str, Any]:
    try:
        async with http.request(method, url, **options) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Refused(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused(f"{status} {body.decode(errors='replace')[:200]}") from None
    if status != 200:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        where = f" ({error['field']})" if isinstance(error, dict) and error.get("field") else ""
        message = error.get("message", body.decode(errors="replace")) if isinstance(error, dict) else answer
        raise Refused(f"{status} {message}{where}")
    if not isinstance(answer, dict):
        raise Refused(f"{status} unexpected answer {body.decode(errors='replace')[:200]}")
    return answer
