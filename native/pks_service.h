/* Service programs Python writes into C: periods, hash tables, least-loaded members, ACLs. */
#pragma once
#include <stdint.h>
#include "pks_packet.h"

/* New flows in C. For a service Python can schedule ahead (a round robin: rr, smooth wrr),
 * it writes one whole period of the scheduler's answers into the table (pks_service_set); for
 * a hashing one (iphash, maglev) the scheduler's table (pks_service_hash, below); for a
 * least-loaded one (lc, wlc) its backends and weights (pks_service_least, below). C takes the
 * answer at the service's cursor (or the client's slot, or the least loaded backend) for
 * each client SYN and opens the flow itself:
 * a slot from the spare ring Python keeps filled, an SNAT pair from the pool (pks_snat, per
 * backend endpoint, least recently used), room from the oldest half-open flow when the
 * table or its half-open share is full (PKS_EV_EVICT), the flow in SYN_RECV, the rewrite,
 * and a PKS_EV_OPEN event for Python's counters. Whatever it cannot do (no spare slot, no
 * free SNAT pair, no room that one eviction makes, a tuple collision, a full event ring, a
 * client the service's access list refuses, a service Python schedules itself) it leaves to
 * Python, which decides as before. */
typedef struct {
    uint32_t backend;   /* Python's backend number */
    uint32_t reason;    /* Python's reason number (held by Python for the period's life);
                           PKS_NONE in a hashed or least-loaded service's members */
    uint32_t addr;      /* the backend's IPv4 address, host order */
    uint16_t port;      /* (its SNAT pool queue is the table's bk_ep[backend]) */
    uint16_t weight;    /* its weight now (a least-loaded service skips 0) */
} pks_pick;

/* a service's program: how C opens its flows */
#define PKS_PROG_PYTHON 0   /* Python schedules them (C checks the SYN, the ACL and the room) */
#define PKS_PROG_PERIOD 1   /* the answer at the cursor (pks_service_set) */
#define PKS_PROG_HASH 2     /* the client's slot (pks_service_hash) */
#define PKS_PROG_LEAST 3    /* the least loaded member (pks_service_least) */
#define PKS_PROG_EMPTY 4    /* no backend takes new flows: C drops the SYN (no_backend) */

#define PKS_SERVICES 1024   /* services C schedules at once */
#define PKS_SLOTS_MAX 5000011 /* a hashed service's slots (maglev's largest table) */
#define PKS_PERIOD_MAX 4096 /* answers in one service's period: more is Python's (writing a
                               period runs the scheduler that often, and each answer's reason
                               is a string Python keeps) */
#define PKS_SPARE 256       /* spare slots C may open flows in */
#define PKS_EV_OPEN_ROOM 2  /* events one SYN C opens writes besides its EVICTs: END, OPEN */

typedef struct {
    uint32_t vip;       /* host order */
    uint16_t port;
    uint16_t ppad;
    uint32_t id;        /* Python's service number */
    uint32_t len;       /* answers in the period (hashed, least-loaded: members) */
    uint32_t cursor;    /* the next answer */
    uint64_t taken;     /* answers taken since the period was written (C's and Python's) */
    pks_pick *picks;
    uint32_t *slots;    /* hashed (iphash, maglev): slot -> member, PKS_NONE empty; else NULL */
    uint32_t size;      /* slots */
    uint8_t with_port;  /* the client port is hashed too (hash_key = "ip+port") */
    uint8_t least;      /* least-loaded (pks_service_least): PKS_LEAST_COUNT or _PER_WEIGHT */
    uint8_t prog;       /* PKS_PROG_*: how C opens the service's flows */
    uint8_t spad;
    uint32_t *acl;      /* the access list (pks_service_acl): (network, mask) pairs, host
                           order, nallow allow prefixes then ndeny deny ones; NULL: none */
    uint32_t nallow;
    uint32_t ndeny;
} pks_service;

/* A hashing scheduler (iphash, maglev) has no period: its table is written into C instead
 * (pks_service_hash), and C hashes the client as sched/hashing.py does (keyed BLAKE2b, 64
 * bits, little-endian; the key set by pks_table_set_hash_key) to find the slot. A flow C opens
 * this way has reason PKS_NONE until Python, applying its OPEN event (value: the slot),
 * writes the reason text, which names the client. */
#define PKS_HASH_KEY_MAX 64

/* A least-loaded scheduler (lc, wlc) has neither: its members and their weights are written
 * into C (pks_service_least), and C picks by each backend's flows as it counts them itself
 * (pks_load, for every flow in the table: ESTABLISHED ones, and those in any other state),
 * as sched/least.py's overhead does: active * PKS_ACTIVE_WEIGHT + inactive, least first
 * (lc), or least per weight compared by cross-multiplying (wlc), weight-0 members skipped,
 * ties to the first member. A SYN reusing the port of a flow is picked for without that
 * flow, as Python ends it before it picks; one that evicts the oldest half-open flow to make
 * room is picked for with it, as Python evicts after its pick. A flow C opens this way has
 * reason PKS_NONE until Python writes it, applying its OPEN event: its counts then are C's
 * at the pick (every change to them before it is an event applied before that one), but
 * for the evicted flow, which the OPEN event names and Python adds back. */
#define PKS_LEAST_COUNT 1
#define PKS_LEAST_PER_WEIGHT 2
#define PKS_ACTIVE_WEIGHT 256

typedef struct {
    uint32_t active;    /* a backend's flows in ESTABLISHED */
    uint32_t inactive;  /* and in any other state (counted from its first state on) */
} pks_load;

/* A service's access list, as core/acl.py: a client is refused if its address is in a deny
 * prefix, or if there are allow prefixes and it is in none. C opens flows for the clients
 * it permits and leaves every other SYN to Python, which refuses and counts it. Set after
 * pks_service_set or pks_service_hash (which keep it while the service stays scheduled in C);
 * nallow = ndeny = 0 removes it. */
#define PKS_ACL_MAX 65536   /* prefixes in one access list: more is Python's (C checks them one
                               by one on every SYN, as Python does; a longer list wants a trie) */
