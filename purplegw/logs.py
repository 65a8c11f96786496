"""Logging set-up: a TRACE level, [logging]/[loglevels] config, early buffering.

Records logged before the config is read (config loading itself, adapter
discovery) are kept in memory and replayed through the configured handlers,
so nothing said at startup is lost or printed in the wrong format.

The log file is created 0600, also when it is reopened after logrotate
moved it away: at DEBUG it holds protocol traffic (who talks to whom, what
they say) even with the credentials redacted.  A file that already exists
keeps its mode, so logrotate's ``create 0640 purplegw adm`` is respected.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import io

    from purplegw.config import Config

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

# Every SIP message sent/received, at TRACE; enabled by [logging] sip_wire.
WIRE_LOGGER = "purplegw.sip.wire"
LOG_FILE_MODE = 0o600


class PrivateFileHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler whose file, when it has to create it, is born 0600.

    The mode is given to open(2) itself: no moment where the file exists
    readable by others, whatever the umask (which can only remove bits).
    """

    def _open(self) -> io.TextIOWrapper:
        stream = open(  # noqa: SIM115 - the handler keeps the stream and closes it
            self.baseFilename,
            self.mode,  # "a": text, so a TextIOWrapper
            encoding=self.encoding,
            errors=self.errors,
            opener=lambda path, flags: os.open(path, flags, LOG_FILE_MODE),
        )
        return cast("io.TextIOWrapper", stream)


_buffer = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)

# What ``setup`` installed, for worker processes: they log to the same place
# (the same 0600 file, reopened after rotation by each process) in the same
# format, marked with their index, rather than to an inherited stderr.
_settings: dict[str, Any] = {}


def bootstrap() -> None:
    """Buffer records until ``setup`` knows where they go."""
    root = logging.getLogger()
    if _buffer not in root.handlers:
        root.addHandler(_buffer)
    root.setLevel(logging.DEBUG)


def setup(config: Config | None, *, verbosity: int = 0, admin: bool = False) -> None:
    """Install the configured handler and replay the buffered records.

    ``admin`` is for one-shot commands (accounts, db, config): they print
    their result, so only warnings and errors are logged unless -v is given.
    """
    section: dict[str, Any] = (
        config["logging"]
        if config is not None
        else {
            "level": "INFO",
            "format": "%(asctime)s %(levelname)-8s %(name)s: %(message)s",
            "file": "",
            "sip_wire": False,
        }
    )
    # A name gives its number: the loader accepted only known level names.
    level: int = logging.getLevelName(section["level"])
    if admin:
        level = max(level, logging.WARNING)
    if verbosity:
        level = max(TRACE, logging.DEBUG - 10 * (verbosity - 1))
    loglevels = dict(config.get("loglevels", {})) if config is not None else {}
    _settings.clear()
    _settings.update(
        file=section["file"],
        format=section["format"],
        level=level,
        loglevels=loglevels,
        sip_wire=bool(section.get("sip_wire")),
    )
    handler = _install(_settings, section["format"])
    # Replay what was said before we knew where to say it.
    root = logging.getLogger()
    root.removeHandler(_buffer)
    for record in _buffer.buffer:
        if record.levelno >= logging.getLogger(record.name).getEffectiveLevel():
            handler.handle(record)
    _buffer.buffer.clear()


def _install(settings: dict[str, Any], log_format: str) -> logging.Handler:
    handler: logging.Handler
    if settings["file"]:
        handler = PrivateFileHandler(settings["file"], encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        if old is not _buffer:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings["level"])
    for name, name_level in settings["loglevels"].items():
        logging.getLogger(name).setLevel(logging.getLevelName(name_level))
    logging.getLogger(WIRE_LOGGER).setLevel(TRACE if settings["sip_wire"] else logging.INFO)
    return handler


def worker_settings() -> dict[str, Any]:
    """What a worker process needs to log as the main process does (picklable)."""
    if _settings:
        return dict(_settings)
    return {
        "file": "",
        "format": "%(asctime)s %(levelname)-8s %(name)s: %(message)s",
        "level": logging.getLogger("purplegw").getEffectiveLevel(),
        "loglevels": {},
        "sip_wire": False,
    }


def setup_worker(settings: dict[str, Any], index: int) -> None:
    """Log from worker process ``index`` where the main process logs.

    The configured format gets a ``workerN[pid]`` prefix so a line says which
    process wrote it; every process appends to the same file (O_APPEND keeps
    whole lines whole) and watches it for rotation on its own.
    """
    _install(settings, f"worker{index}[%(process)d] " + settings["format"])
