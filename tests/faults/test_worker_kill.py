"""A worker process killed with SIGKILL while messages flow (``[actors] workers = 2``).

Four SIP users, each with a pjsua2 phone and an XMPP account, two per worker
(the shard is ``state.shard_of``); bob on Prosody talks with all of them.
One worker is killed in the middle of the traffic.  The users on the other
worker keep exchanging messages while it is down (every MESSAGE they send
meanwhile is accepted), the killed worker's accounts log in again in a new
process.  Then the same worker is killed while Prosody is down, with
MESSAGEs it had accepted (202) waiting for its accounts to reconnect.
Every accepted message of either direction is delivered.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from purplegw.actors.state import shard_of
from tests.faults.traffic import (
    CountingPeer,
    Cursor,
    Ids,
    Ticker,
    body_for,
    gateway_for,
    peer_cursor,
    phone_cursor,
    registered_phone,
    wait_delivered,
    wait_until,
)
from tests.kit.tally import Tally

if TYPE_CHECKING:
    from pathlib import Path

    from tests.kit.pjsua_agent import PjsuaAgent

WORKERS = 2
PER_WORKER = 2


def users_per_shard(domain: str) -> list[list[str]]:
    shards: list[list[str]] = [[] for _ in range(WORKERS)]
    n = 0
    while any(len(s) < PER_WORKER for s in shards):
        name = f"w{n}"
        shard = shards[shard_of(f"{name}@{domain}", WORKERS)]
        if len(shard) < PER_WORKER:
            shard.append(name)
        n += 1
    return shards


def test_worker_sigkill_mid_traffic_loses_nothing(  # noqa: PLR0915 - one story
    own_prosody: Any,
    tmp_path: Path,
) -> None:
    prosody = own_prosody
    bob = prosody.create_user("bob")
    shards = users_per_shard("sip.test")
    names = [name for shard in shards for name in shard]
    accounts = {name: prosody.create_user(name) for name in names}
    sip_to_xmpp = Tally("worker SIGKILL: SIP -> XMPP")
    xmpp_to_sip = Tally("worker SIGKILL: XMPP -> SIP")
    gateway = gateway_for(
        prosody, tmp_path, accounts, actors={"workers": WORKERS, "flap_retry_in": 1.0}
    ).start()
    peer = CountingPeer(
        bob.jid,
        bob.password,
        prosody.host,
        prosody.port,
        ca_file=prosody.ca_file,
        tally=xmpp_to_sip,
    )
    phones: dict[str, PjsuaAgent] = {}
    try:
        status = gateway.wait_accounts("connected")
        pids = {entry["sip_user"].split("@")[0]: entry["pid"] for entry in status}
        victim_names, survivors = shards[0], shards[1]
        victim_pid = pids[victim_names[0]]
        assert {pids[n] for n in victim_names} == {victim_pid}, pids
        assert victim_pid not in {pids[n] for n in survivors}, pids
        assert victim_pid != gateway.process.pid  # type: ignore[union-attr]
        peer.start()
        for name in names:
            phones[name] = registered_phone(gateway, name)
        cursors = [peer_cursor(peer, sip_to_xmpp)]
        cursors += [phone_cursor(agent, sip_to_xmpp, xmpp_to_sip) for agent in phones.values()]
        ids = {name: (Ids(f"wk-{name}", "sip"), Ids(f"wk-{name}", "xmpp")) for name in names}
        during_outage: list[str] = []  # survivors' MESSAGEs sent while the worker is dead
        outage = {"on": False}

        def tick() -> None:
            for name in names:
                out_ids, in_ids = ids[name]
                msg_id = out_ids.next()
                sip_to_xmpp.send(msg_id, conversation=name)
                if outage["on"] and name in survivors:
                    during_outage.append(msg_id)
                phones[name].message(f"sip:{bob.jid}", body_for(msg_id))
                peer.send_counted(accounts[name].jid, in_ids.next())

        def phones_only() -> None:
            for name in names:
                msg_id = ids[name][0].next()
                sip_to_xmpp.send(msg_id, conversation=name)
                phones[name].message(f"sip:{bob.jid}", body_for(msg_id))

        def victims(state: str | None, not_pid: int) -> bool:
            entries = [e for e in gateway.status() if e["sip_user"].split("@")[0] in victim_names]
            return all(
                (state is None or e["state"] == state) and e["pid"] not in (0, not_pid)
                for e in entries
            )

        # A. Kill one worker while every account is connected and busy.
        with Ticker(tick, interval=0.25):
            time.sleep(1.5)
            outage["on"] = True
            os.kill(victim_pid, signal.SIGKILL)
            # The survivors' traffic goes on while the worker is dead or restarting.
            wait_until(
                lambda: victims("connected", victim_pid),
                60,
                "the killed worker's accounts logged in again",
            )
            outage["on"] = False
            time.sleep(1.5)
        # B. Kill it again while Prosody is down: the MESSAGEs it had queued
        #    (answered 202, waiting for the account to reconnect) die with it.
        prosody.stop()
        wait_until(
            lambda: all(e["state"] != "connected" for e in gateway.status()),
            30,
            "every account noticed the outage",
        )
        with Ticker(phones_only, interval=0.25):
            time.sleep(1.5)
        wait_until(lambda: not _unanswered(sip_to_xmpp, cursors), 60, "every MESSAGE answered")
        second_pid = next(
            e["pid"] for e in gateway.status() if e["sip_user"].split("@")[0] == victim_names[0]
        )
        for cursor in cursors:
            cursor.poll()
        queued_at_second_kill = sip_to_xmpp.missing()
        os.kill(second_pid, signal.SIGKILL)
        wait_until(lambda: victims(None, second_pid), 60, "the worker restarted again")
        prosody.start()
        gateway.wait_accounts("connected")
        wait_until(lambda: peer.online, 60, "bob back online")
        wait_delivered([sip_to_xmpp, xmpp_to_sip], cursors, timeout=60, settle=peer.request_ack)
        assert during_outage, "no traffic while the worker was down"
        refused_meanwhile = sorted(set(during_outage) & sip_to_xmpp.refused)
        assert not refused_meanwhile, (
            "survivors refused while the other worker was down",
            refused_meanwhile,
        )
        # Phase B did leave accepted messages in the killed worker's queue.
        assert any(_is_victims(m, victim_names) for m in queued_at_second_kill), (
            "no accepted message waited in the killed worker"
        )
        sip_to_xmpp.check()
        xmpp_to_sip.check()
    finally:
        for agent in phones.values():
            agent.stop()
        peer.stop()
        code = gateway.stop()
        assert code == 0, gateway.log_text()


def _unanswered(tally: Tally, cursors: list[Cursor]) -> list[str]:
    for cursor in cursors:
        cursor.poll()
    return sorted(set(tally.sent) - tally.accepted - tally.refused)


def _is_victims(msg_id: str, victim_names: list[str]) -> bool:
    return any(msg_id.startswith(f"fault-wk-{name}-") for name in victim_names)
