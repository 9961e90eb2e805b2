/* A flow, the timer heap's entry, and the events C reports to Python. */
#pragma once
#include <stdint.h>
#include "pks_packet.h"

typedef struct {
    pks_key key[2];     /* dir 0 and dir 1 as they arrive; each direction is rewritten to the
                           other's key reversed (pks_flow_nat), so no rewrite is stored */
    uint64_t pkts[2];
    uint64_t bytes[2];
    double last_seen;   /* `now` of the last packet seen on the flow */
    double created;     /* `now` when the flow was opened */
    double synack_at;   /* the backend's first SYN-ACK, -1 before it (set by whichever side
                           sees it) */
    double req_at;      /* when the client's first payload was seen, 0: not yet */
    double timer_due;   /* when the flow's live timer entry comes due */
    uint32_t ack[2];    /* the highest acknowledgment number sent each way (to reset a flow) */
    uint32_t seq_end[2];/* the highest sequence number + length sent each way */
    uint32_t maxend[2]; /* the right edge the other way allowed this way's data: its highest
                           ack + window (native/window.c), known with win_known's bit */
    uint32_t maxwin[2]; /* the largest window (scaled) each way advertised */
    uint32_t timer_seq; /* the flow's live entry in the timer heap, 0: none */
    uint32_t gen;       /* flows opened in this slot so far: tells a flow from its successor */
    uint32_t prev;      /* the table's list of the flow's state (pks_table: ho, closing), or */
    uint32_t next;      /* (next) the free slots' */
    float timeout;      /* idle seconds before expiry, the state's when it was entered */
    uint32_t backend;   /* Python's numbers for the flow's backend, service, the reason it */
    uint32_t reason;    /* was chosen; and the SNAT pair (address index, port) with has_snat */
    uint32_t service;
    uint16_t snat_addr;
    uint16_t snat_port;
    uint8_t has_snat;
    uint8_t acked[2];   /* an ACK was seen that way: ack[] holds something */
    uint8_t used;
    uint8_t state;      /* the TCP state (Python's tcpstate.State), moved by C */
    uint8_t measured;   /* the first response after the first request was timed */
    uint8_t synacked;   /* C reported the backend's first SYN-ACK */
    uint8_t syns;       /* SYNs seen from the client, as Python counts them (255 at most) */
    uint8_t wscale[2];  /* each way's SYN: its window scale option's shift + 1, 0: none */
    uint8_t win_known;  /* bit d: maxend[d] is known */
    uint8_t client_bits;/* counted in the client table under this prefix (pks_clients.h),
                           0: not counted */
    uint8_t cookie;     /* opened by a SYN cookie's ACK (cookie.c): PKS_CK_*; 0: not */
    uint8_t one_packet; /* a one-packet service's datagram awaiting its answer: only key[1]
                           is indexed (pks_service.h) */
    uint32_t seq_delta; /* a cookie flow: the backend's sequence numbers minus the client's
                           view of them (before the backend answered: the cookie itself) */
} pks_flow;

#define PKS_CK_SYN_SENT 1   /* C sent the backend its SYN and waits for its SYN-ACK */
#define PKS_CK_WINDOW 2     /* the backend's SYN-ACK is in: it becomes the client's window */
#define PKS_CK_ANSWERED 3   /* the client has its window; the backend waits for an ACK */
#define PKS_CK_DONE 4       /* the backend has had the client's ACK: both handshakes over */

/* the timer heap: one live entry per flow at most, stale ones skipped when they surface */
typedef struct {
    double due;
    uint32_t slot;
    uint32_t seq;
} pks_timer;

#define PKS_S_NONE 0        /* tcpstate.State.NONE: a flow before its first state */
#define PKS_S_ESTABLISHED 1
#define PKS_S_SYN_RECV 3    /* tcpstate.State.SYN_RECV: the half-open state */
#define PKS_S_TIME_WAIT 5   /* TIME_WAIT and CLOSE: a client's SYN in them opens a new flow */
#define PKS_S_CLOSE 6
#define PKS_S_UDP 11        /* a UDP flow's one state (IPVS's "UDP"), past the TCP states of
                               the grid (PKS_STATES): its timeout is its service's */
#define PKS_NONE 0xffffffff /* no slot (list ends, no oldest half-open flow) */
#define PKS_COMPACT_MIN 1024 /* stale timer entries tolerated before the heap is rebuilt */

/* What C did on its own that Python must know (pks_events_take): a state change, the first
 * response timed, a flow opened or ended. Python applies them in order before it decides on
 * any packet. Each carries the flow's generation, backend and reason as they were, so an
 * event is applied right even when C has ended its flow since (a reused client port). */
#define PKS_EV_RESPONSE 2   /* the first response came `value` seconds after the request */
#define PKS_EV_SYNACK 3     /* the backend's first SYN-ACK, at t: the handshake took `value`
                               seconds, `to` is the client's SYN count (C set synack_at) */
#define PKS_EV_OPEN 4       /* C opened the flow for a client's SYN, at t; `value` and `data`
                               are what the flow's reason needs (pks_event_data). It comes
                               after the END of the flow whose port the SYN reuses and before
                               the EVICTs of the flows ended to make room, so that the counts
                               applied before it are those C picked on (lc, wlc, lrt) */
#define PKS_EV_END 5        /* C ended the flow, in state `from`, to open a new one for a SYN
                               from the same client port: bytes, backend and reason as it was */
#define PKS_EV_EVICT 6      /* C ended the oldest half-open flow to make room for a new one
                               (as many as the table or its half-open share need) */
#define PKS_EV_REFUSED 7    /* the backend answered the client's SYN with an RST (no SYN-ACK
                               yet), or a UDP flow's datagram with ICMP port unreachable: a
                               passive health signal */
#define PKS_EV_RECLAIM 8    /* C ended a flow to take its SNAT pair for a new one, every pair
                               toward its backend being in use (open.c, reclaim_from): `from`
                               is its state, TIME_WAIT or CLOSE, else SYN_RECV */
#define PKS_EV_ANSWERED 9   /* C ended a one-packet flow: each of its datagrams was answered */
#define PKS_EVENTS 1024     /* ring size: when it is full, C leaves packets to Python */

/* what an event carries besides its head, by kind */
typedef union {
    uint64_t word[4];   /* the union as Python reads it (core/events.py): four words, which
                           it takes as the member the event's kind names */
    uint64_t bytes[2];  /* END, EVICT: the flow's bytes in, out */
    struct {
        uint32_t active[2];   /* the chosen member's and the runner-up's flows at the pick,
                                 ESTABLISHED and other (the runner-up's member index is the
                                 event's value, PKS_NONE with no runner-up) */
        uint32_t inactive[2];
        double rt[2];         /* lrt: their response times then (-1: not measured) */
    } least;            /* OPEN of lc, wlc, lrt */
    int64_t total;      /* OPEN of wrr: the total weight */
} pks_event_data;

typedef struct {
    uint32_t slot;
    uint8_t kind;
    uint8_t from;
    uint8_t to;
    uint8_t dir;
    uint32_t gen;
    uint32_t backend;
    uint32_t reason;
    uint32_t service;
    double t;
    double value;       /* SYNACK, RESPONSE: seconds; OPEN: rr the member's index, wrr its
                           current, hashed the client's slot, lc, wlc and lrt the
                           runner-up's member index */
    pks_event_data data;
} pks_event;
