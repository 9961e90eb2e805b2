"""The TCP state machine of a switched flow: the only module that decides flow state.

Theory of operation
-------------------
The switch sees both halves of every TCP connection it balances but terminates neither, so it
tracks a coarse state per flow, exactly as Linux IPVS does (net/netfilter/ipvs/ip_vs_proto_tcp.c):
each packet is reduced to one *event* by its flags, in a fixed priority RST > SYN > FIN > ACK,
and the next state is a lookup in a grid indexed by (direction, event) and the current state.
"input" is a packet from the client toward the backend, "output" a packet from the backend.
The state sets the idle timeout: a flow with no packet for that long is expired and its
SNAT port and backend slot are freed. A transition sets state and timeout together.

The names are IPVS's, and they describe the connection as a whole, not one endpoint:
SYN_RECV means "a SYN came from the client", TIME_WAIT "both sides sent FIN" (or a FIN
arrived in SYN_RECV), CLOSE "reset or closed, keep briefly for stray packets".

The grid and the timeouts below are the data the code runs on; `pktswitch tcp-states` and the
README print them from here, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from enum import IntEnum


class State(IntEnum):
    NONE = 0
    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT = 4
    TIME_WAIT = 5
    CLOSE = 6
    CLOSE_WAIT = 7
    LAST_ACK = 8
    LISTEN = 9
    SYNACK = 10


class UdpState(IntEnum):
    """A UDP flow's one state (IPVS's "UDP"), numbered after the TCP states: outside the grid,
    no packet moves it, and its timeout is its service's udp_timeout."""

    UDP = 11


class Event(IntEnum):
    SYN = 0
    FIN = 1
    ACK = 2
    RST = 3


INPUT, OUTPUT = 0, 1  # from the client side / from the backend

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

sNO, sES, sSS, sSR, sFW, sTW, sCL, sCW, sLA, sLI, sSA = State

# IPVS tcp_states[] (ip_vs_proto_tcp.c, Linux 6.x), rows: event; columns: current state.
# fmt: off
TRANSITIONS: tuple[tuple[tuple[State, ...], ...], ...] = (
    (  # INPUT: client -> backend
        #      sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        # syn
        (sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR),
        # fin
        (sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW),
        # ack
        (sCL, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES),
        # rst
        (sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR),
    ),
    (  # OUTPUT: backend -> client
        #      sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        # syn
        (sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR),
        # fin
        (sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW),
        # ack
        (sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES),
        # rst
        (sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL),
    ),
)
# fmt: on

# IPVS tcp_timeouts[] defaults, in seconds (conntrack keeps ESTABLISHED for 5 days; IPVS 15 min).
DEFAULT_TIMEOUTS: dict[State, float] = {
    State.NONE: 2,
    State.ESTABLISHED: 15 * 60,
    State.SYN_SENT: 2 * 60,
    State.SYN_RECV: 60,
    State.FIN_WAIT: 2 * 60,
    State.TIME_WAIT: 2 * 60,
    State.CLOSE: 10,
    State.CLOSE_WAIT: 60,
    State.LAST_ACK: 30,
    State.LISTEN: 2 * 60,
    State.SYNACK: 2 * 60,
}

# States in which a new SYN from the client means the client reused its port for a new
# connection: the old flow is finished and the SYN is scheduled anew (IPVS conn_reuse_mode).
REUSABLE = frozenset({State.TIME_WAIT, State.CLOSE})


def event_of(flags: int) -> Event | None:
    """The one event a packet with these TCP flags stands for, or None (no flag we track)."""
    if flags & RST:
        return Event.RST
    if flags & SYN:
        return Event.SYN
    if flags & FIN:
        return Event.FIN
    if flags & ACK:
        return Event.ACK
    return None


def next_state(state: State, direction: int, flags: int) -> State:
    """The state after a packet with `flags` travelling in `direction` (INPUT or OUTPUT)."""
    ev = event_of(flags)
    if ev is None:
        return state
    return TRANSITIONS[direction][ev][state]


def timeout_name(state: State) -> str:
    """The config key of a state's timeout in `[timeouts]`: the state's name in lower case."""
    return state.name.lower()


ALIASES = {
    s: "s" + a
    for s, a in zip(
        State, ("NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA"), strict=True
    )
}


def render(timeouts: dict[State, float] | None = None) -> str:
    """The transition grid and the timeouts as text, from the tables above."""
    timeouts = DEFAULT_TIMEOUTS if timeouts is None else timeouts
    head = "           " + " ".join(f"{ALIASES[s]:>3}" for s in State)
    lines = ["rows: the packet's event; columns: the flow's state; cells: the next state", ""]
    for direction, name in ((INPUT, "from client"), (OUTPUT, "from backend")):
        lines += [f"{name}:", head]
        for ev in Event:
            cells = " ".join(f"{ALIASES[TRANSITIONS[direction][ev][s]]:>3}" for s in State)
            lines.append(f"  {ev.name.lower():<8} {cells}")
        lines.append("")
    lines.append("timeouts:")
    for s in State:
        lines.append(f"  {ALIASES[s]} {s.name:<12} {timeouts[s]:g} s")
    return "\n".join(lines)
