"""JSON Merge Patch (RFC 7396): what a patch object sets, replaces or (with null) removes in a JSON value."""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """`target` with `patch` applied, as RFC 7396 section 2 defines it; neither argument is changed.

    A patch that is not an object replaces the target whole; an object patch turns a non-object
    target into an object first; a member whose patch value is null is removed.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
