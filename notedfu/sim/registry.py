"""Named simulator instances, shared by everything in one process.

Like python-can's virtual bus channels: two ``sim://notecard?name=bench``
ports talk to the same card, so a test (or an agent restarted in-process)
finds the card in the state it was left in. Unnamed ports get a fresh card.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_instances: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def get_or_create(kind: str, name: str | None, factory: Callable[[], T]) -> T:
    """The instance called ``name`` of ``kind``, made by ``factory`` the first time."""
    if not name:
        return factory()
    with _lock:
        key = (kind, name)
        if key not in _instances:
            _instances[key] = factory()
        return _instances[key]


def register(kind: str, name: str, instance: Any) -> None:
    """Make ``instance`` reachable as ``sim://KIND?name=NAME``."""
    with _lock:
        _instances[(kind, name)] = instance


def lookup(kind: str, name: str) -> Any:
    """The instance called ``name``; ``KeyError`` if there is none."""
    with _lock:
        return _instances[(kind, name)]


def forget(kind: str, name: str) -> None:
    """Drop a named instance (tests clean up with this)."""
    with _lock:
        _instances.pop((kind, name), None)
