/* The flow table: every flow, its index, timers, events, and the per-packet calls. */
#pragma once
#include <stdint.h>
#include "pks_flow.h"
#include "pks_service.h"
#include "pks_snat.h"
#include "pks_clients.h"

/* a list of flows through their prev and next: first, last, how many */
typedef struct {
    uint32_t head;
    uint32_t tail;
    uint32_t count;
} pks_list;

typedef struct {
    uint32_t nslots;    /* flows the table can hold */
    uint32_t nkeys;     /* keys in the index (2 per flow) */
    uint32_t mask;      /* index capacity - 1 (a power of two) */
    uint64_t seed;
    uint32_t *index;    /* open addressing, linear probing: slot << 1 | dir, or 0xffffffff */
    pks_flow *flows;
    uint8_t trans[2][4][PKS_STATES]; /* next state by [dir][event][state]; event: SYN FIN ACK RST */
    uint8_t has_trans;  /* trans is loaded: C moves flows' states */
    double timeouts[PKS_STATES]; /* idle timeout per state, seconds (pks_table_set_timeouts) */
    pks_list ho;        /* the flows in SYN_RECV, oldest first, and their most at once */
    uint32_t half_open_peak;
    pks_list closing;   /* the flows in TIME_WAIT or CLOSE, in the order they came there:
                           the first to give an SNAT pair back when a backend's run out */
    pks_timer *heap;    /* min-heap by due; grows by doubling */
    uint32_t heap_len;
    uint32_t heap_cap;
    uint32_t stale;     /* heap entries that are no flow's live entry any more */
    uint32_t timer_seq; /* the last entry's number */
    uint32_t ev_head;   /* the event ring: oldest event, and how many */
    uint32_t ev_count;
    pks_event events[PKS_EVENTS];
    uint32_t count;     /* flows in the table */
    uint32_t max_half_open; /* C opens no flow beyond this many half-open ones */
    uint32_t free_head; /* the free slots: those from `fresh` on were never used; the others
                           are a list through their flows' `next`, the one freed last first
                           (PKS_NONE: empty). A new flow takes the list's first, else fresh. */
    uint32_t fresh;
    uint32_t nsvc;      /* services C schedules */
    pks_service svc[PKS_SERVICES];
    pks_snat *snat;     /* full NAT: the pool, and the SNAT addresses by index; NULL: nat */
    uint32_t snat_addrs[PKS_SNAT_ADDRS];
    uint32_t *bk_ep;    /* SNAT pool endpoint by Python's backend number, PKS_NONE: unknown */
    uint32_t bk_cap;
    pks_load *bk_load;  /* each backend's flows, by Python's backend number (pks_table_set_
                           backends): a flow of a backend beyond it is not counted */
    uint32_t bk_load_cap;
    pks_clients *clients; /* per-client limits' counts (pks_clients.h), NULL: none yet */
    uint64_t hash_state[8]; /* BLAKE2b's state after the hashing schedulers' key block */
    uint32_t hash_key_len;  /* 0: no key set (C opens no hashed flow) */
    uint64_t opened;    /* flows C opened */
    uint64_t cookie_state[8]; /* BLAKE2b's state after the SYN cookies' key block */
    uint32_t cookies_from; /* half-open flows from which C answers SYNs with cookies
                              (0: always, PKS_NONE: never; pks_table_set_cookies) */
    uint32_t cookie_key_len;
    double cookie_last; /* when C last sent a cookie: ACKs are checked for 128 s after */
    uint64_t cookies_sent;
    uint64_t cookie_opens; /* flows opened by a valid cookie's ACK */
    uint64_t icmp_echo_replies; /* echo requests to a VIP, answered */
    uint64_t rst_in_window; /* RSTs in their flow's window but not exact: passed on without
                               moving the flow (native/window.c) */
    double echo_tokens; /* the echo replies' token bucket (icmp.c), as of echo_at */
    double echo_at;
    uint64_t icmp_errors[2]; /* errors about a flow translated, by the way they went: [0]
                                toward the backend, [1] toward the client */
    uint64_t slow[PKS_SLOW_COUNT]; /* packets left to Python, by why (PKS_SLOW_*) */
    uint8_t *trace_buf; /* tracing (pks_trace.h): Python's buffer, trace_cap 0: not tracing */
    uint32_t trace_cap;
    uint32_t trace_used;/* bytes of records in it, not taken yet */
    uint32_t trace_snap;
    uint32_t pad2;
    uint64_t trace_lost;/* records that found the buffer full */
} pks_table;

pks_table *pks_table_new(uint32_t nslots, uint64_t seed);
/* Loads the state grid (2 x 4 x PKS_STATES bytes: [dir][SYN FIN ACK RST][state]), from which
 * pks_process moves flows on RST, SYN, FIN and ACK; 0, or -1 for a state out of range */
int pks_table_set_transitions(pks_table *t, const uint8_t *grid, uint32_t len);
/* The idle timeout of each state (PKS_STATES values, seconds); a flow takes its state's
 * when it enters it. 0, or -1 for a bad count or a negative timeout. */
int pks_table_set_timeouts(pks_table *t, const double *timeouts, uint32_t n);


/* Backend numbers below n, at least, are counted (t->bk_load grows by doubling, to
 * bk_load_cap; new ones start at 0 flows): 0; -1 no memory, or n above PKS_NUMBER_MAX. Call
 * it before any flow names a new number. */
int pks_table_set_backends(pks_table *t, uint32_t n);

/* Backend number `backend` sends to the SNAT pool's endpoint ep (so C can free the pair of
 * a flow it ends): 0; -1 no memory, or a number not below PKS_NUMBER_MAX */
int pks_table_set_endpoint(pks_table *t, uint32_t backend, uint32_t ep);

/* Moves up to max events, oldest first, out of the ring into out; returns how many */
uint32_t pks_events_take(pks_table *t, pks_event *out, uint32_t max);
void pks_table_free(pks_table *t);
/* Indexes a flow at `slot` whose dir-0 packets arrive as k0 and dir-1 packets as k1; each
 * direction is rewritten to the other's key reversed. State NONE, no timer.
 * 0 on success; -1 if either key is already indexed or they are equal (nothing is changed);
 * -2 bad slot/used. The slot leaves the free slots (the first one, or a fresh one, at once;
 * another after a walk of the list: C's own opening takes the first). */
int pks_table_insert(pks_table *t, uint32_t slot, const pks_key *k0, const pks_key *k1);
/* What direction dir of a used slot's packets are rewritten to */
void pks_flow_nat(const pks_table *t, uint32_t slot, uint8_t dir, pks_nat *out);
/* Moves a used slot's flow to `state` at `now`: the state's timeout, the half-open list, and
 * a timer entry when the new deadline is earlier than the live one. 0; -1 bad slot/state;
 * -3 no memory for the timer entry (the state is set, the old timer stays) */
int pks_flow_set_state(pks_table *t, uint32_t slot, uint8_t state, double now);
/* removes both keys of a used slot, its timer and its place in the half-open list, and puts
 * the slot first in the free list; 0 on success, -1 if the slot is not in use. Only gen (and
 * the free list's link) survives. */
int pks_table_remove(pks_table *t, uint32_t slot);
/* slot << 1 | dir, or -1 */
int64_t pks_table_lookup(const pks_table *t, const pks_key *k);
/* Idle expiry without a scan: pops timer entries due at `now`; a flow that saw packets since
 * gets a new entry at last_seen + timeout, one that did not has its slot put in out (its
 * timer is gone; the caller removes it). Up to max slots; returns how many. */
uint32_t pks_expire(pks_table *t, double now, uint32_t *out, uint32_t max);
/* the earliest entry's due time (maybe stale: early, never late), or -1 with none */
double pks_next_due(const pks_table *t);
/* The used slots among the `span` slots from `from` on, into out (room for span); returns
 * how many. A walk of the table looks at a bounded span each call. */
uint32_t pks_table_scan(const pks_table *t, uint32_t from, uint32_t *out, uint32_t span);

/* vnet: 1 if buf starts with a virtio_net_hdr (a TUN device with IFF_VNET_HDR). buf holds
 * len bytes, and has room for PKS_ROOM more than the virtio_net_hdr whatever len: C may
 * answer with a packet of its own (cookie.c), whose length m then says (m->hdr +
 * m->ip_len: what to write back) */
#define PKS_ROOM 64
int pks_process(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m, int vnet);

/* pks_rewrite with the nat of m's flow and direction */
void pks_apply(pks_table *t, uint8_t *buf, const pks_meta *m);
