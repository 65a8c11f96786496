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
    handler: logging.Handler
    if section["file"]:
        handler = PrivateFileHandler(section["file"], encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(section["format"]))
    root = logging.getLogger()
    for old in list(root.handlers):
        if old is not _buffer:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    loglevels = config.get("loglevels", {}) if config is not None else {}
    for name, name_level in loglevels.items():
        logging.getLogger(name).setLevel(logging.getLevelName(name_level))
    logging.getLogger(WIRE_LOGGER).setLevel(TRACE if section.get("sip_wire") else logging.INFO)
    # Replay what was said before we knew where to say it.
    root.removeHandler(_buffer)
    for record in _buffer.buffer:
        if record.levelno >= logging.getLogger(record.name).getEffectiveLevel():
            handler.handle(record)
    _buffer.buffer.clear()
