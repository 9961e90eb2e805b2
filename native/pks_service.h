/* Service programs Python writes into C: a scheduler's members and state, hash tables, ACLs. */
#pragma once
#include <stdint.h>
#include "pks_packet.h"

/* New flows in C. Python compiles each service's scheduler into a program C runs on every
 * client SYN (pks_service_run, pks_service_hash): the members (every backend of the service,
 * in the list's order, with its weight now) and the scheduler's state, which C owns from then
 * on and Python reads back (pks_service_state) before it changes the program or answers
 * `which`. C picks as the scheduler in sched/ does (those are the specification and the
 * tests' oracle) and opens the flow itself: a free slot, an SNAT pair from the pool (per
 * backend endpoint, least recently used), room from the oldest half-open flows when the
 * table or its half-open share is full (PKS_EV_EVICT), the flow in SYN_RECV, the rewrite,
 * and a PKS_EV_OPEN event that carries what the flow's reason text needs. What it refuses
 * it drops with a named reason (PKS_E_NO_SERVICE ... PKS_E_TUPLE). */
typedef struct {
    uint32_t backend;   /* Python's backend number */
    uint32_t reason;    /* the reason a flow given this member gets, when it names nothing but
                           the member (rr; Python holds it for the program's life); else
                           PKS_NONE: Python writes it, applying the OPEN event */
    uint32_t addr;      /* the backend's IPv4 address, host order */
    uint16_t port;      /* (its SNAT pool queue is the table's bk_ep[backend]) */
    uint16_t weight;    /* its weight now: 0 takes no new flows */
} pks_pick;

/* a service's program: how C picks a backend for its new flows, and the state it keeps */
#define PKS_PROG_EMPTY 0    /* no backend takes new flows: C drops the SYN (no_backend) */
#define PKS_PROG_RR 1       /* rr: the next member with a weight, from state[0] (the index
                               the search starts at) on */
#define PKS_PROG_WRR 2      /* nginx's smooth wrr: state[i] is member i's current */
#define PKS_PROG_HASH 3     /* iphash, maglev: the client's slot (pks_service_hash) */
#define PKS_PROG_LC 4       /* least overhead (lc) */
#define PKS_PROG_WLC 5      /* least overhead per weight (wlc) */
#define PKS_PROG_LRT 6      /* least response time: least rt * (overhead + 1) per weight */

#define PKS_SERVICES 1024   /* services C schedules at once */
#define PKS_TIMEOUT_MAX 2147483 /* seconds: the longest timeout (the config's, HAProxy's) */
#define PKS_SLOTS_MAX 5000011 /* a hashed service's slots (maglev's largest table) */
#define PKS_MEMBERS_MAX 65536 /* backends in one service */
#define PKS_EV_OPEN_ROOM 3  /* events one SYN C opens writes besides its EVICTs: END, OPEN,
                               RECLAIM */

typedef struct {
    uint32_t vip;       /* host order */
    uint16_t port;      /* with proto: what the service is (a TCP and a UDP service may share
                           a VIP and port) */
    uint8_t proto;      /* PKS_PROTO_TCP or PKS_PROTO_UDP (pks_service_transport) */
    uint8_t prog;       /* PKS_PROG_* */
    uint8_t with_port;  /* hashed: the client port is hashed too (hash_key = "ip+port") */
    uint8_t one_packet; /* UDP: each datagram is scheduled on its own (IPVS's -o) */
    double udp_timeout; /* UDP: its flows' idle timeout, seconds */
    uint32_t id;        /* Python's service number */
    uint32_t len;       /* members */
    pks_pick *picks;    /* the members */
    int64_t *state;     /* the scheduler's state (PKS_PROG_*), nstate values */
    uint32_t nstate;
    uint32_t size;      /* hashed (iphash, maglev): slots */
    uint32_t *slots;    /* hashed: slot -> member, PKS_NONE empty; else NULL */
    uint32_t *acl;      /* the access list (pks_service_acl): (network, mask) pairs, host
                           order, nallow allow prefixes then ndeny deny ones; NULL: none */
    uint32_t nallow;
    uint32_t ndeny;
    uint32_t lim_bits;  /* per-client limits (pks_service_limits): a client's prefix, 1..32;
                           0: none */
    uint32_t lim_flows; /* a client's flows at most, 0: no limit */
    double lim_gap;     /* 1 / its new flows per second, 0: no limit */
    double lim_ahead;   /* (burst - 1) x lim_gap: how far its tat may run ahead of now */
} pks_service;

/* The state each program keeps (pks_service_run's nstate) */
#define PKS_STATE_RR 1      /* (wrr: one per member; the others none) */

/* A hashing scheduler (iphash, maglev) keeps no state but a table (pks_service_hash): C
 * hashes the client as sched/hashing.py does (keyed BLAKE2b, 64 bits, little-endian; the key
 * set by pks_table_set_hash_key) to find the slot; the OPEN event's value is the slot. */
#define PKS_HASH_KEY_MAX 64

/* lc and wlc pick by each backend's flows as C counts them itself (pks_load, for every flow
 * in the table: ESTABLISHED ones, and those in any other state), as sched/least.py's
 * overhead does: active * PKS_ACTIVE_WEIGHT + inactive, least first (lc), or least per
 * weight compared by cross-multiplying (wlc), weight-0 members skipped, ties to the first
 * member. A SYN reusing the port of a flow is picked for without that flow, as the flow
 * ends before the pick; one that evicts the oldest half-open flows to make room is picked
 * for with them (they end after the pick). Python writes the flow's reason when it applies
 * the OPEN event: the counts then are C's at the pick (every change to them before it is an
 * event applied before that one), but for the evicted flows, whose EVICTs follow it.
 *
 * lrt picks as lc does, by the least score rt * (overhead + PKS_ACTIVE_WEIGHT) / weight in
 * doubles, in that order: rt is the response time Python smoothed and wrote
 * (pks_backend_rt; unmeasured scores 0), and the flow it would take counts as one more
 * ESTABLISHED. Its OPEN event's data carries the two rts too. */
#define PKS_ACTIVE_WEIGHT 256

typedef struct {
    uint32_t active;    /* a backend's flows in ESTABLISHED */
    uint32_t inactive;  /* and in any other state (counted from its first state on) */
    uint64_t total;     /* flows C opened for it */
    uint64_t bytes[2];  /* the bytes of its flows, each way (in: toward it), ever */
    double rt;          /* its smoothed response time, seconds, as Python wrote it; -1:
                           not measured */
} pks_load;

/* A service's access list, as core/acl.py: a client is refused if its address is in a deny
 * prefix, or if there are allow prefixes and it is in none. C opens flows for the clients
 * it permits and drops the other SYNs (acl_denied). Set after pks_service_run or
 * pks_service_hash (a new program keeps it); nallow = ndeny = 0 removes it. */
#define PKS_ACL_MAX 65536   /* prefixes in one access list (C checks them one by one on every
                               SYN, as core/acl.py does; a longer list wants a trie) */
