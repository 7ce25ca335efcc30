"""One call of each type through a Segment-style analytics client (Segment's and RudderStack's share the API)."""

from __future__ import annotations

from typing import Any


def send_every_call(client: Any, user: str) -> list[dict[str, Any]]:
    """Queue track, identify, page, screen, group and alias, then flush: the client's consumer thread posts
    them as one /v1/batch. The messages as the client queued them."""
    calls = [
        client.track(user, "Signed Up", {"plan": "pro"}),
        client.identify(user, {"email": f"{user}@example.com"}),
        client.page(user, "Docs", "Home", {"path": "/"}),
        client.screen(user, "App", "Settings", {"tab": 2}),
        client.group(user, "group-1", {"size": 3}),
        client.alias("anon-" + user, user),
    ]
    client.shutdown()  # flush, then stop the consumer thread
    assert all(queued for queued, _ in calls)
    return [message for _, message in calls]
