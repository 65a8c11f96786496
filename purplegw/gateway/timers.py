"""Keyed one-shot timers on the gateway's worker: restarting a key replaces its timer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from purplegw.gateway.ports import TimerHandle, WorkerPort


class KeyedTimers:
    def __init__(self, worker: WorkerPort) -> None:
        self.worker = worker
        self._handles: dict[Hashable, TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._handles)

    def start(self, key: Hashable, seconds: float, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the worker after ``seconds``, replacing ``key``'s timer."""
        self.cancel(key)
        self._handles[key] = self.worker.call_later(seconds, self._fired, key, fn, args)

    def cancel(self, key: Hashable) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def _fired(self, key: Hashable, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._handles.pop(key, None)
        fn(*args)
