from __future__ import annotations

import pytest

from pktswitch.core.tcpstate import (
    DEFAULT_TIMEOUTS,
    INPUT,
    OUTPUT,
    Event,
    State,
    event_of,
    next_state,
)

F, S, R, A, P = 0x01, 0x02, 0x04, 0x10, 0x08


@pytest.mark.parametrize(
    ("flags", "event"),
    [
        (S, Event.SYN),
        (S | A, Event.SYN),
        (F | A, Event.FIN),
        (A, Event.ACK),
        (P | A, Event.ACK),
        (R, Event.RST),
        (R | A, Event.RST),
        (R | S | F | A, Event.RST),  # RST beats everything
        (S | F, Event.SYN),  # SYN beats FIN
        (P, None),
        (0, None),
    ],
)
def test_event_priority(flags: int, event: Event | None) -> None:
    assert event_of(flags) == event


# Whole conversations, packet by packet: (direction, flags, state after).
CONVERSATIONS = {
    "handshake and client closes first": [
        (INPUT, S, State.SYN_RECV),
        (OUTPUT, S | A, State.SYN_RECV),
        (INPUT, A, State.ESTABLISHED),
        (INPUT, P | A, State.ESTABLISHED),
        (OUTPUT, P | A, State.ESTABLISHED),
        (INPUT, F | A, State.CLOSE_WAIT),
        (OUTPUT, A, State.CLOSE_WAIT),
        (OUTPUT, F | A, State.TIME_WAIT),
        (INPUT, A, State.TIME_WAIT),
    ],
    "backend closes first": [
        (INPUT, S, State.SYN_RECV),
        (OUTPUT, S | A, State.SYN_RECV),
        (INPUT, A, State.ESTABLISHED),
        (OUTPUT, F | A, State.FIN_WAIT),
        (INPUT, A, State.FIN_WAIT),
        (INPUT, F | A, State.TIME_WAIT),
        (OUTPUT, A, State.TIME_WAIT),
    ],
    "backend refuses": [
        (INPUT, S, State.SYN_RECV),
        (OUTPUT, R | A, State.CLOSE),
    ],
    "client resets an established flow": [
        (INPUT, S, State.SYN_RECV),
        (OUTPUT, S | A, State.SYN_RECV),
        (INPUT, A, State.ESTABLISHED),
        (INPUT, R, State.CLOSE),
    ],
    "RST from the client in SYN_RECV is ignored (IPVS: spoofed RSTs)": [
        (INPUT, S, State.SYN_RECV),
        (INPUT, R, State.SYN_RECV),
    ],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_conversation(name: str) -> None:
    state = State.NONE
    for i, (direction, flags, expected) in enumerate(CONVERSATIONS[name]):
        state = next_state(state, direction, flags)
        assert state == expected, f"packet {i}"


def test_flags_without_event_keep_state() -> None:
    for s in State:
        assert next_state(s, INPUT, P) == s


def test_ipvs_default_timeouts() -> None:
    assert DEFAULT_TIMEOUTS[State.ESTABLISHED] == 900
    assert DEFAULT_TIMEOUTS[State.SYN_RECV] == 60
    assert DEFAULT_TIMEOUTS[State.TIME_WAIT] == 120
    assert DEFAULT_TIMEOUTS[State.CLOSE] == 10
    assert DEFAULT_TIMEOUTS[State.CLOSE_WAIT] == 60
    assert DEFAULT_TIMEOUTS[State.LAST_ACK] == 30
    assert DEFAULT_TIMEOUTS[State.FIN_WAIT] == 120
    assert set(DEFAULT_TIMEOUTS) == set(State)
