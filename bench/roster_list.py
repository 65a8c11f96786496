"""What a roster costs the buddy list: a roster push vs a presence change, and memory per contact.

    .venv/bin/python bench/roster_list.py [--sizes 100,500,2000] [--repeat 5] [--number 200]

The real ``Gateway`` on the test fakes (tests/gateway/fakes.py: no sockets,
the caller's thread is the worker), one SIP user with an XMPP account whose
roster has N contacts (half of them online) and one phone subscribed to the
buddy list.  Timed, per event, best of ``--repeat``:

- **roster push**: ``on_roster_item`` renaming one contact (what an XMPP
  roster push does): the list is compared before and after the change and
  one partial NOTIFY with that contact is built and handed to the front;
- **reference**: ``on_contact_presence`` for one contact, the partial
  NOTIFY the list sent before rosters (no comparison).

Memory (tracemalloc, N contacts): the rosters' state per contact against a
stored ``Presentity`` per contact (the reference: what keeping every roster
contact as a presentity would add).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import timeit
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purplegw.gateway.model import AccountRef  # noqa: E402
from purplegw.gateway.presence import Presentity  # noqa: E402
from purplegw.gateway.roster import Rosters  # noqa: E402
from purplegw.presence import ContactPresence, Presence, Status  # noqa: E402
from purplegw.protocols.base import RosterItem  # noqa: E402
from tests.gateway.fakes import Handle  # noqa: E402
from tests.gateway.test_presence_buddylist import list_subscribe  # noqa: E402
from tests.gateway.test_presence_service import USER, Rig, open_store  # noqa: E402


def contacts(n: int) -> list[RosterItem]:
    return [RosterItem(f"contact{i}@example.org", f"Contact {i}", "both") for i in range(n)]


def timed(n: int, repeat: int, number: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="purplegw-bench-") as tmp:
        stores = open_store(Path(tmp))
        store = next(stores)
        rig = Rig(store, handles=[Handle(USER, "xmpp", "alice@example.org")])
        (xmpp,) = rig.directory.handles
        rig.gateway.on_roster(xmpp.info, tuple(contacts(n)))
        for i in range(0, n, 2):
            rig.gateway.on_contact_presence(
                xmpp.info,
                ContactPresence(f"contact{i}@example.org", {"": Presence(Status.AVAILABLE)}),
            )
        assert list_subscribe(rig).status == 200
        names = itertools.count()
        statuses = itertools.cycle((Status.AWAY, Status.AVAILABLE))

        def push() -> None:
            item = RosterItem("contact1@example.org", f"Renamed {next(names)}", "both")
            rig.gateway.on_roster_item(xmpp.info, item)

        def presence() -> None:
            rig.gateway.on_contact_presence(
                xmpp.info, ContactPresence("contact1@example.org", {"": Presence(next(statuses))})
            )

        def run(fn: object) -> float:
            rig.front.sent.clear()
            best = min(timeit.repeat(fn, repeat=repeat, number=number))  # type: ignore[arg-type]
            assert len(rig.front.notifies()) == repeat * number, "one partial NOTIFY per event"
            return best / number * 1e6

        push_us, presence_us = run(push), run(presence)
        rig.gateway.stop()
        stores.close()
        return push_us, presence_us


def memory(n: int) -> tuple[float, float]:
    """Bytes per contact, the items themselves (as events deliver them) included."""
    tracemalloc.start()
    rosters = Rosters()
    rosters.replace(AccountRef(1, USER, "xmpp", "alice@example.org"), contacts(n))
    roster_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    stored = {}
    for i in range(n):
        contact = f"contact{i}@example.org"
        key = (USER, "xmpp", contact.lower())
        uri = f"sip:{contact};proto=xmpp"
        stored[key] = Presentity(key, contact, uri.split(";", 1)[0], uri=uri)
    presentity_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return roster_bytes / n, presentity_bytes / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,2000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        "| roster size | roster push (us) | presence change, reference (us) | push / reference "
        "| roster B/contact | presentity B/contact, reference | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        push_us, presence_us = timed(n, args.repeat, args.number)
        roster_b, presentity_b = memory(n)
        print(
            f"| {n} | {push_us:.0f} | {presence_us:.0f} | {push_us / presence_us:.2f} "
            f"| {roster_b:.0f} | {presentity_b:.0f} | {roster_b / presentity_b:.2f} |"
        )


if __name__ == "__main__":
    main()
