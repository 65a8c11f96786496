"""slixmpp's JID parser, without the rest of slixmpp.

The main process checks every XMPP contact a phone subscribes to or adds
(``Adapter.contact_error``) with the parser the session will use, so that
what the session would refuse is refused before anything is kept.  Importing
``slixmpp.jid`` runs ``slixmpp/__init__.py`` first, which imports the whole
library: 244 modules and ~20 MiB of RSS (measured on slixmpp 1.17), in a
main process that hosts no session when ``[actors] workers`` > 0, and a
pause of the gateway's thread at its first SUBSCRIBE.  slixmpp 1.17's
``jid`` is a compiled extension that imports nothing of slixmpp, so it is
loaded from its file alone (~1 MiB).  It is not put in ``sys.modules``: a
process that later imports slixmpp gets the same module again (the
extension is initialised once per process, ``tests/protocols/test_xmpp_jid.py``).
Any other layout (a pure-Python ``jid.py`` of an older slixmpp) is imported
the ordinary way.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType


@functools.cache
def jid_module() -> ModuleType:
    """The module with slixmpp's ``JID`` and ``InvalidJID``."""
    loaded = sys.modules.get("slixmpp.jid")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("slixmpp")  # finds, does not import
    if package is not None and package.origin is not None:
        folder = Path(package.origin).parent
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"jid{suffix}"
            if path.is_file():
                spec = importlib.util.spec_from_file_location("slixmpp.jid", path)
                if spec is None or spec.loader is None:
                    break
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    import slixmpp.jid  # noqa: PLC0415 - the ordinary way, whole package

    return slixmpp.jid
