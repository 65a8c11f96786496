"""The contact check's JID parser: slixmpp's, loaded without the rest of slixmpp."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

from purplegw.protocols.xmpp import jid

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

# Run in a fresh interpreter: the test process itself imported slixmpp long ago.
_CHECK = """
import json, sys
from purplegw.protocols.xmpp import Adapter

adapter = Adapter()
verdicts = [adapter.contact_error(c) for c in ("bob@example.com/phone", "a@b@c")]
before = sorted(m for m in sys.modules if m.split(".")[0] == "slixmpp")
from purplegw.protocols.xmpp.jid import jid_module
import slixmpp.jid
print(json.dumps({
    "verdicts": verdicts,
    "slixmpp_modules_before": before,
    "same_class": slixmpp.jid.JID is jid_module().JID,
    "after": str(slixmpp.jid.JID("Bob@Example.com/phone").bare),
}))
"""


def test_a_contact_check_loads_the_jid_parser_and_nothing_else_of_slixmpp() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    seen = json.loads(out)
    assert seen["verdicts"] == [None, "not a valid XMPP address"]
    assert seen["slixmpp_modules_before"] == []
    # slixmpp imported later in the same process (workers = 0) has the same classes.
    assert seen["same_class"] is True
    assert seen["after"] == "bob@example.com"


def test_without_a_compiled_jid_it_is_imported_the_ordinary_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.machinery
    import importlib.util

    import slixmpp.jid

    # An slixmpp whose folder has no compiled jid (an older, pure-Python one).
    fake = importlib.machinery.ModuleSpec("slixmpp", None, origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake)
    monkeypatch.delitem(sys.modules, "slixmpp.jid")
    jid.jid_module.cache_clear()
    try:
        assert jid.jid_module() is slixmpp.jid
    finally:
        jid.jid_module.cache_clear()
