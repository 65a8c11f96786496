"""The daemon's life: start order, signals, pid file, control socket, stop order.

``run()`` is what ``purplegw run`` calls.  Start order (stopped in reverse,
in ``finally``, Mopidy's ``_app/process.py`` shape):

1. pid file (refuse to start twice), signal handlers;
2. protocol adapters (``load_adapters``), account runtime (in-process
   supervisor, or ``[actors] workers`` processes);
3. services -- the SIP front, presence actors... -- each a callable
   ``service(runtime) -> stop`` so they listen before the first login;
4. the account rows from ``account_source()`` -> account actors log in;
5. the control socket.

Signals: SIGHUP re-reads the rows and applies the diff; SIGTERM/SIGINT log
every account out (bounded by ``shutdown_timeout``) and exit 0; SIGUSR1
logs every thread's traceback (``pykka.debug.log_thread_tracebacks``).
Signal handlers only set flags: the main thread polls them, because taking
a lock inside a handler can deadlock with the code it interrupted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka
import pykka.debug

from purplegw.actors import listener, systemd
from purplegw.actors.control import ControlError, ControlServer
from purplegw.actors.control import query_status as query_status  # re-export for cli.py  # noqa: PLC0414 - an explicit re-export (mypy strict has no implicit ones)
from purplegw.actors.gc_tuning import apply_gc_threshold, restore_gc_thresholds
from purplegw.actors.loop import stop_shared_loop
from purplegw.actors.state import ActorsConfig
from purplegw.actors.workers import start_accounts
from purplegw.protocols.base import AccountCredentials, ProxySettings

if TYPE_CHECKING:
    from purplegw.actors.supervisor import Directory, ReloadSummary

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP_FAILED = 16  # mautrix's convention for "could not start"
EXIT_ALREADY_RUNNING = 17

_POLL = 0.2

AccountSource = Callable[[], Sequence[AccountCredentials]]


class Runtime:
    """What services get: the running accounts and the daemon's controls."""

    def __init__(self, accounts: Any, account_source: AccountSource) -> None:
        self._accounts = accounts
        self._account_source = account_source
        self._reload_lock = threading.RLock()
        # Extra control-socket commands services offer (e.g. "messages.requeued").
        self.commands: dict[str, Callable[[], Any]] = {}
        # Every row of the account table as last read; None before the first read.
        self.rows: list[AccountCredentials] | None = None
        # Which of the rows run here: all of them, unless a cluster service
        # narrows them to the users whose leases this node holds.
        self.select: Callable[[Sequence[AccountCredentials]], list[AccountCredentials]] = list
        self.node = ""  # the cluster node's name, shown in status; "" = single node
        # Called on SIGTERM before the accounts log out (a cluster node stops taking users).
        self.before_stop: list[Callable[[], None]] = []

    @property
    def directory(self) -> Directory:
        """``directory.get(sip_user, protocol)`` / ``of_user(sip_user)`` -> handles."""
        return self._accounts.directory

    def apply(self, rows: Sequence[AccountCredentials]) -> ReloadSummary:
        """Run the selected ones of ``rows`` (the whole table) and nothing else."""
        with self._reload_lock:
            self.rows = list(rows)
            return self._accounts.apply(self.select(self.rows))

    def refresh(self) -> ReloadSummary | None:
        """Apply the selection again (a cluster node's leases changed); None before any rows."""
        with self._reload_lock:
            if self.rows is None:
                return None
            return self._accounts.apply(self.select(self.rows))

    def reload(self) -> ReloadSummary:
        """Re-read the account rows and apply the diff (SIGHUP does this)."""
        with self._reload_lock:
            rows = list(self._account_source())
            summary = self.apply(rows)
            logger.info("Reload: %s", summary.as_dict())
            for key in summary.removed:
                # After the account logged out: its row is gone (account_id 0).
                listener.send(
                    "on_account_removed",
                    account=listener.AccountInfo(0, key.sip_user, key.protocol, ""),
                )
            return summary

    def stopping(self) -> None:
        """SIGTERM, before the accounts log out: run the ``before_stop`` hooks."""
        for hook in self.before_stop:
            try:
                hook()
            except Exception:
                logger.exception("Error before stopping in %r", hook)

    def status(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self._accounts.status()
        if self.node:
            return [{**entry, "node": self.node} for entry in entries]
        return entries


class _Signals:
    def __init__(self) -> None:
        self.stop = False
        self.reload = False

    def install(self) -> dict[int, Any]:
        previous = {}
        handlers = {
            signal.SIGTERM: self._on_stop,
            signal.SIGINT: self._on_stop,
            signal.SIGHUP: self._on_reload,
            signal.SIGUSR1: lambda *_: pykka.debug.log_thread_tracebacks(),
        }
        for signum, handler in handlers.items():
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _on_stop(self, *_: object) -> None:
        self.stop = True

    def _on_reload(self, *_: object) -> None:
        self.reload = True


def proxy_settings(section: Any) -> ProxySettings | None:
    """``[proxy]`` as ProxySettings; None without a host or port (direct connections).

    Keys: ``http_host``, ``http_port`` (etc/purplegw.toml; ``host``/``port``
    are accepted too), ``username``, ``password``.
    """
    if section is None or isinstance(section, ProxySettings):
        return section
    host = section.get("http_host") or section.get("host") or ""
    port = int(section.get("http_port") or section.get("port") or 0)
    if not host or not port:
        return None
    return ProxySettings(
        host=host,
        port=port,
        username=section.get("username") or None,
        password=section.get("password") or None,
    )


@contextlib.contextmanager
def pid_file(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Write our pid to ``path``; refuse when a live process owns it."""
    if path is None:
        yield
        return
    target = Path(path)
    other = read_pid(target)
    if other is not None and other != os.getpid() and _alive(other):
        msg = f"another purplegw (pid {other}) owns {target}"
        raise AlreadyRunningError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if read_pid(target) == os.getpid():
            target.unlink()


class AlreadyRunningError(RuntimeError):
    pass


def read_pid(path: str | os.PathLike[str]) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def send_reload(pidfile: str | os.PathLike[str]) -> int:
    """``purplegw reload``: SIGHUP the daemon named by ``pidfile``; its pid."""
    pid = read_pid(pidfile)
    if pid is None or not _alive(pid):
        msg = f"no running purplegw found through {pidfile}"
        raise ControlError(msg)
    os.kill(pid, signal.SIGHUP)
    return pid


Service = Callable[[Runtime], Callable[[], None] | None]


def run(  # noqa: PLR0913 - the runtime's parts, all keyword-only
    config: Mapping[str, Any],
    account_source: AccountSource,
    *,
    adapters: Any = None,
    services: Sequence[Service] = (),
    pidfile: str | os.PathLike[str] | None = None,
    control_socket: str | os.PathLike[str] | None = None,
    ready: Callable[[Runtime], None] | None = None,
) -> int:
    """Run the gateway until SIGTERM/SIGINT; return the process exit code.

    ``config`` holds the ``actors``, ``protocols`` and ``proxy`` sections as
    plain dicts (other keys are ignored).  ``adapters`` defaults to
    ``purplegw.protocols.loader.load_adapters(config["protocols"])``.
    Must be called from the main thread (signal handlers).
    """
    try:
        actors_config = ActorsConfig.from_section(config.get("actors"))
    except Exception as exc:  # noqa: BLE001 - any bad [actors] value is a start-up failure, told in one line
        logger.error("Invalid [actors] configuration: %s", exc)  # noqa: TRY400
        return EXIT_STARTUP_FAILED
    # [messaging] strangers reaches every session through its protocol section.
    strangers = (config.get("messaging") or {}).get("strangers", "allow")
    protocols_config = {
        name: {**(section or {}), "strangers": strangers}
        for name, section in (config.get("protocols") or {}).items()
    }
    proxy = proxy_settings(config.get("proxy"))
    signals = _Signals()
    previous = signals.install()
    gc_thresholds = apply_gc_threshold(actors_config.gc_threshold)
    try:
        with pid_file(pidfile):
            return _run(
                actors_config,
                protocols_config,
                proxy,
                account_source,
                adapters,
                services,
                control_socket,
                ready,
                signals,
            )
    except AlreadyRunningError as exc:
        logger.error("%s; stop it first or remove the stale pid file", exc)  # noqa: TRY400
        return EXIT_ALREADY_RUNNING
    finally:
        restore_gc_thresholds(gc_thresholds)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(  # noqa: C901, PLR0912, PLR0913, PLR0915, PLR0917 - start-up in order, each step undone on failure
    actors_config: ActorsConfig,
    protocols_config: dict[str, Any],
    proxy: ProxySettings | None,
    account_source: AccountSource,
    adapters: Any,
    services: Sequence[Service],
    control_socket: str | os.PathLike[str] | None,
    ready: Callable[[Runtime], None] | None,
    signals: _Signals,
) -> int:
    stops: list[Callable[[], None]] = []
    accounts = None
    runtime: Runtime | None = None
    server: ControlServer | None = None
    try:
        if adapters is None and actors_config.workers == 0:
            from purplegw.protocols.loader import load_adapters  # noqa: PLC0415

            adapters = load_adapters(protocols_config)
        try:
            accounts = start_accounts(actors_config, adapters, protocols_config, proxy)
        except Exception:
            logger.exception("Cannot start the account runtime")
            return EXIT_STARTUP_FAILED
        runtime = Runtime(accounts, account_source)
        for service in services:
            try:
                stop = service(runtime)
            except Exception:
                logger.exception("Service %r failed to start", service)
                return EXIT_STARTUP_FAILED
            if stop is not None:
                stops.append(stop)
        try:
            rows = list(account_source())
        except Exception:
            logger.exception("Cannot read the account table; check [store] and the database")
            return EXIT_STARTUP_FAILED
        summary = runtime.apply(rows)
        logger.info("Started with %d accounts", len(summary.added))
        if control_socket is not None:
            server = ControlServer(
                control_socket,
                {
                    **runtime.commands,
                    "status": runtime.status,
                    "reload": lambda: runtime.reload().as_dict(),
                    "ping": lambda: True,
                },
            ).start()
        if ready is not None:
            ready(runtime)
        notifier = systemd.Notifier()  # READY=1 only now: the front listens, accounts started
        notifier.ready(f"{len(summary.added)} accounts")
        while not signals.stop:
            time.sleep(_POLL)
            notifier.watchdog()
            if signals.reload:
                signals.reload = False
                try:
                    runtime.reload()
                except Exception:
                    logger.exception("Reload failed; the running accounts are unchanged")
        notifier.stopping()
        logger.info("Stopping: logging every account out")
        return EXIT_OK
    finally:
        # Control socket first (no new commands), then the accounts log out
        # while the services can still take their last events, then services.
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        if runtime is not None:
            runtime.stopping()
        if accounts is not None:
            try:
                accounts.stop()
            except Exception:
                logger.exception("Error while logging accounts out")
        for stop in reversed(stops):
            try:
                stop()
            except Exception:
                logger.exception("Error while stopping %r", stop)
        pykka.ActorRegistry.stop_all(timeout=10)
        stop_shared_loop()
