/* pktswitch native core: packet parsing, NAT rewrite with incremental checksums, flow index.
 *
 * This header is the whole C interface; native/build.py feeds it to cffi unchanged, so every
 * declaration here must stay inside what cffi's cdef parser accepts (no macros with bodies).
 *
 * Theory of operation
 *   pks_process() is the one call made for every packet read from the TUN device. It validates
 *   and parses the IP and transport headers into a pks_meta, looks the flow key up in the
 *   index and counts the packet on its flow. If Python marked the flow fast and the packet
 *   carries no SYN or RST (a backend's SYN-ACK excepted), C decides on it by itself: a
 *   SYN-ACK is reported once (the handshake time), a FIN or an ACK moves the flow's state
 *   through the grid Python loaded (pks_table_set_transitions: tcpstate.TRANSITIONS, so Python
 *   stays the one definition of the state machine), the first response after the client's
 *   first request is timed, each recorded as an event for Python (pks_events_take); then the
 *   rewrite is applied and the verdict is PKS_V_FAST. A client's SYN for a service Python
 *   scheduled ahead (pks_service_set), with no flow or reusing the port of one in TIME_WAIT
 *   or CLOSE, is opened here too ("New flows in C" below). Otherwise (a SYN C cannot open,
 *   RST, a flow Python keeps for itself, or a full event ring) Python gets PKS_V_SLOW, drives
 *   the state machine in tcpstate.py and calls pks_apply() for the rewrite. Malformed packets
 *   give PKS_V_DROP with the reason in meta->err; nothing is written to the buffer then.
 *
 *   Every flow lives here and only here (a flat array indexed by slot): keys, counters, the
 *   state with its timeout, the timer (a heap of deadlines, pks_expire), the half-open list,
 *   and Python's numbers for its service, backend, reason and SNAT pair; Python keeps no
 *   object per flow (core/flows.py makes views on demand), so a flow costs its 216-byte
 *   pks_flow, 16 bytes of index and about one 16-byte timer entry. Which slots are free is
 *   Python's (it lends C a few, the spare ring); a state change goes through one function
 *   whichever side decides it, and Python applies the events (its backends' counts) before
 *   it decides on any packet, so both sides agree on every state. Keys are
 *   family-independent (16-byte addresses) so IPv6 and UDP fit without redesign.
 */
#include <stdint.h>

/* verdicts of pks_process */
#define PKS_V_SLOW 0
#define PKS_V_FAST 1
#define PKS_V_DROP 2

/* parse errors (meta->err); names in pks_err_name() */
#define PKS_OK 0
#define PKS_E_SHORT 1
#define PKS_E_VERSION 2
#define PKS_E_IHL 3
#define PKS_E_TOTLEN 4
#define PKS_E_IPCSUM 5
#define PKS_E_FRAGMENT 6
#define PKS_E_PROTO 7
#define PKS_E_L4SHORT 8
#define PKS_E_TCPOFF 9
#define PKS_E_VNET 10
#define PKS_E_COUNT 11

/* virtio_net_hdr (include/uapi/linux/virtio_net.h): what a TUN device opened with IFF_VNET_HDR
 * puts before each packet. NEEDS_CSUM: the TCP checksum field holds only the pseudo-header sum
 * (not complemented) and the device finishes it from csum_start; the rewrite then adjusts that
 * sum for address changes only, as ports are not part of it. */
#define PKS_VNET_HDR_LEN 10
#define PKS_VNET_F_NEEDS_CSUM 1

/* transport protocols parsed: TCP is switched; ICMP is parsed only as far as its type and code
 * and always left to Python (echo replies, errors about a flow) */
#define PKS_PROTO_ICMP 1
#define PKS_PROTO_TCP 6

#define PKS_STATES 11    /* TCP states in Python's tcpstate.State */

#define PKS_TCP_FIN 1
#define PKS_TCP_SYN 2
#define PKS_TCP_RST 4
#define PKS_TCP_PSH 8
#define PKS_TCP_ACK 16

typedef struct {
    uint8_t family;     /* 4 (6 later) */
    uint8_t proto;      /* 6 = TCP (17 = UDP later) */
    uint16_t sport;     /* host byte order */
    uint16_t dport;
    uint16_t pad;       /* always 0: keys are compared as bytes */
    uint8_t saddr[16];  /* IPv4 uses the first 4 bytes, the rest stay 0 */
    uint8_t daddr[16];
} pks_key;

typedef struct {        /* what the addresses and ports of one direction become */
    uint8_t saddr[16];
    uint8_t daddr[16];
    uint16_t sport;     /* host byte order */
    uint16_t dport;
} pks_nat;

typedef struct {
    int32_t err;        /* PKS_OK or PKS_E_* */
    int32_t slot;       /* flow slot, or -1 when the key is unknown */
    uint8_t dir;        /* 0: client side -> backend, 1: backend -> client side */
    uint8_t tcp_flags;  /* TCP: the flags; ICMP: 0 */
    uint8_t hdr;        /* bytes before the IP header: 0, or PKS_VNET_HDR_LEN */
    uint8_t partial;    /* the TCP checksum field holds a partial (pseudo-header) sum */
    uint16_t ip_len;    /* IP total length: the packet's length in bytes */
    uint16_t l4_off;    /* offset of the transport header */
    uint16_t payload;   /* transport payload bytes */
    uint16_t ip_csum;   /* IP header checksum as read */
    uint16_t l4_csum;   /* transport checksum as read */
    uint16_t sport;     /* = key.sport, key.dport, and the IPv4 addresses as host-order */
    uint16_t dport;     /* integers: cheap for Python to read on the new-flow path */
    uint32_t saddr4;
    uint32_t daddr4;
    uint8_t icmp_type;  /* ICMP (key.proto 1): type and code; the ports are 0 */
    uint8_t icmp_code;
    pks_key key;
} pks_meta;

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
    uint32_t timer_seq; /* the flow's live entry in the timer heap, 0: none */
    uint32_t gen;       /* flows opened in this slot so far: tells a flow from its successor */
    uint32_t prev;      /* the half-open list (oldest first), while state is SYN_RECV */
    uint32_t next;
    float timeout;      /* idle seconds before expiry, the state's when it was entered */
    uint32_t backend;   /* Python's numbers for the flow's backend, service, the reason it */
    uint32_t reason;    /* was chosen; and the SNAT pair (address index, port) with has_snat */
    uint32_t service;
    uint16_t snat_addr;
    uint16_t snat_port;
    uint8_t has_snat;
    uint8_t acked[2];   /* an ACK was seen that way: ack[] holds something */
    uint8_t used;
    uint8_t fast;       /* set by Python: C may decide on packets without SYN or RST */
    uint8_t state;      /* the TCP state (Python's tcpstate.State); C moves it on FIN/ACK */
    uint8_t measured;   /* the first response after the first request was timed */
    uint8_t synacked;   /* C reported the backend's first SYN-ACK */
    uint8_t syns;       /* SYNs seen from the client, as Python counts them (255 at most) */
} pks_flow;

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
#define PKS_NONE 0xffffffff /* no slot (list ends, no oldest half-open flow) */
#define PKS_COMPACT_MIN 1024 /* stale timer entries tolerated before the heap is rebuilt */

/* What C did on its own that Python must know (pks_events_take): a state change, the first
 * response timed, a flow opened or ended. Python applies them in order before it decides on
 * any packet. Each carries the flow's generation, backend and reason as they were, so an
 * event is applied right even when C has ended its flow since (a reused client port). */
#define PKS_EV_STATE 1      /* from -> to, at t (see all_events) */
#define PKS_EV_RESPONSE 2   /* the first response came `value` seconds after the request */
#define PKS_EV_SYNACK 3     /* the backend's first SYN-ACK, at t: the handshake took `value`
                               seconds, `to` is the client's SYN count (C set synack_at) */
#define PKS_EV_OPEN 4       /* C opened the flow for a client's SYN, at t; for a hashed service
                               (pks_service_hash) `value` is the client's slot; bytes[1] is
                               the backend of the half-open flow it evicted to make room
                               (PKS_NONE: none), counted at the pick (pks_service_least) */
#define PKS_EV_END 5        /* C ended the flow, in state `from`, to open a new one for a SYN
                               from the same client port: bytes, backend and reason as it was */
#define PKS_EV_EVICT 6      /* C ended the oldest half-open flow to make room for a new one,
                               as Python's path does when the table or its half-open share is
                               full; with END and EVICT, dir 1: the new flow took its slot */
#define PKS_EVENTS 1024     /* ring size: when it is full, C leaves packets to Python */

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
    double value;
    uint64_t bytes[2];
} pks_event;

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

#define PKS_SERVICES 1024   /* services C schedules at once */
#define PKS_SLOTS_MAX 5000011 /* a hashed service's slots (maglev's largest table) */
#define PKS_PERIOD_MAX 4096 /* answers in one service's period: more is Python's (writing a
                               period runs the scheduler that often, and each answer's reason
                               is a string Python keeps) */
#define PKS_SPARE 256       /* spare slots C may open flows in */
#define PKS_EV_OPEN_ROOM 2  /* events one SYN C opens may write: the flow it ends, and OPEN */

typedef struct {
    uint32_t vip;       /* host order */
    uint16_t port;
    uint16_t ppad;
    uint32_t id;        /* Python's service number */
    uint32_t len;       /* answers in the period (hashed: members); 0: not scheduled in C */
    uint32_t cursor;    /* the next answer */
    pks_pick *picks;
    uint32_t *slots;    /* hashed (iphash, maglev): slot -> member, PKS_NONE empty; else NULL */
    uint32_t size;      /* slots */
    uint8_t with_port;  /* the client port is hashed too (hash_key = "ip+port") */
    uint8_t least;      /* least-loaded (pks_service_least): PKS_LEAST_COUNT or _PER_WEIGHT */
    uint8_t spad[2];
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

/* The SNAT pool of full NAT (core/nat.py explains the policy): each backend endpoint has the
 * whole pool of (address, port) pairs; pairs never used are handed out first, in a walk from
 * a start Python picks at random, then freed ones, oldest first (a FIFO ring that grows). A
 * pair number n is address n % naddrs, port lo + n / naddrs. */
#define PKS_TIME_WAIT 60    /* seconds: a backend's TIME_WAIT: a pair reused sooner counts early */
#define PKS_RING_MIN 1024   /* freed pairs an endpoint's ring holds before it first grows */
#define PKS_SNAT_ADDRS 16   /* SNAT addresses C can open flows with */
#define PKS_NUMBER_MAX 16777216 /* endpoint and backend numbers stay below this */

typedef struct {
    uint32_t start;     /* where this endpoint's walk begins */
    uint32_t fresh;     /* pairs handed out at least once */
    uint32_t in_use;
    uint32_t head;      /* the ring of freed pairs: oldest, count, capacity */
    uint32_t count;
    uint32_t cap;
    uint32_t live;      /* added (pks_snat_add) */
    uint32_t *pairs;
    double *times;
    double last_freed;  /* the latest release's time (pks_snat_drop waits out its TIME_WAIT) */
} pks_snatq;

typedef struct {
    uint32_t naddrs;
    uint32_t lo;        /* the first port */
    uint32_t size;      /* pairs: naddrs x ports */
    uint32_t nq;        /* endpoints known */
    uint32_t qcap;
    uint32_t in_use_total;
    pks_snatq *q;
    uint32_t *in_use_by_addr;
    uint64_t exhausted; /* allocations refused: every pair toward that endpoint in use */
    uint64_t early_reuse; /* pairs handed out again within PKS_TIME_WAIT of being freed */
} pks_snat;

typedef struct {
    uint32_t nslots;    /* flows the table can hold */
    uint32_t nkeys;     /* keys in the index (2 per flow) */
    uint32_t mask;      /* index capacity - 1 (a power of two) */
    uint64_t seed;
    uint32_t *index;    /* open addressing, linear probing: slot << 1 | dir, or 0xffffffff */
    pks_flow *flows;
    uint8_t trans[2][4][PKS_STATES]; /* next state by [dir][event][state]; event: SYN FIN ACK RST */
    uint8_t has_trans;  /* trans is loaded: fast flows change state in C */
    double timeouts[PKS_STATES]; /* idle timeout per state, seconds (pks_table_set_timeouts) */
    uint32_t half_open; /* flows in SYN_RECV, and the list of them, oldest first */
    uint32_t half_open_peak;
    uint32_t ho_head;
    uint32_t ho_tail;
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
    uint8_t open_on;    /* C may open flows (Python turns it off while it traces packets) */
    uint8_t all_events; /* report every state change C makes; else only those into or out
                           of ESTABLISHED, the ones that change a backend's counts (Python
                           sets it while it traces packets, to show each transition) */
    uint8_t pad[2];
    uint32_t nspare;    /* free slots Python lent C to open flows in, used from the top */
    uint32_t spare[PKS_SPARE];
    uint32_t nsvc;      /* services C schedules */
    pks_service svc[PKS_SERVICES];
    pks_snat *snat;     /* full NAT: the pool, and the SNAT addresses by index; NULL: nat */
    uint32_t snat_addrs[PKS_SNAT_ADDRS];
    uint32_t *bk_ep;    /* SNAT pool endpoint by Python's backend number, PKS_NONE: unknown */
    uint32_t bk_cap;
    pks_load *bk_load;  /* each backend's flows, by Python's backend number (pks_table_set_
                           backends): a flow of a backend beyond it is not counted */
    uint32_t bk_load_cap;
    uint64_t hash_state[8]; /* BLAKE2b's state after the hashing schedulers' key block */
    uint32_t hash_key_len;  /* 0: no key set (C opens no hashed flow) */
    uint64_t opened;    /* flows C opened */
} pks_table;

/* pks_drain: the established-flow loop in C, for a TUN device opened non-blocking */
#define PKS_D_EMPTY 0   /* the device has no more packets */
#define PKS_D_PYTHON 1  /* buf holds a packet Python must decide on (len, verdict, now, m) */
#define PKS_D_BUDGET 2  /* budget packets forwarded, more may be waiting */
#define PKS_D_ERROR 3   /* read failed: errno in err */
#define PKS_D_OTHER 4   /* while waiting, another fd of the caller's epoll set became ready */
#define PKS_WAIT_MAX 60 /* seconds one epoll_wait may sleep (a longer wait is several) */

typedef struct {
    uint32_t forwarded;     /* packets C read, rewrote and wrote back by itself */
    uint32_t largest;       /* the largest read so far, in bytes (never reset) */
    uint32_t write_errors;  /* writes the kernel refused; the last errno in err */
    uint32_t wait_failed;   /* with PKS_D_ERROR: epoll_wait failed, not read */
    int32_t err;
    int32_t status;         /* PKS_D_* */
    uint32_t len;           /* with PKS_D_PYTHON: the packet's length in buf */
    int32_t verdict;        /* with PKS_D_PYTHON: pks_process's verdict (SLOW or DROP) */
    double now;             /* with PKS_D_PYTHON: the time it was read (CLOCK_MONOTONIC) */
} pks_drain_result;

/* Reads packets from fd into buf and handles each with pks_process; a FAST one is written
 * back at once, anything else stops the loop and is left in buf for Python. At most budget
 * packets. The clock is CLOCK_MONOTONIC, Python's time.monotonic().
 *
 * When the device is empty and wait > 0 (seconds), it waits there instead of returning:
 * epoll_wait on epfd, the caller's own epoll set (level-triggered, holding fd, each entry's
 * data.fd the fd as Python's select.epoll registers it), for `wait` at most in all. Only fd
 * ready: back to reading; any other fd ready: PKS_D_OTHER, so the caller serves it
 * (level-triggered, its own epoll_wait reports it again); epoll_wait failing: PKS_D_ERROR
 * with wait_failed set. It does not wait, and says PKS_D_EMPTY, when the event
 * ring holds anything (Python applies events, which may move its timers, before it sleeps),
 * when the wait ends, or when a signal interrupts it (Python runs its handlers). */
void pks_drain(pks_table *t, int fd, uint8_t *buf, uint32_t cap, int vnet, uint32_t budget,
               pks_meta *m, int epfd, double wait, pks_drain_result *r);
/* pks_drain's work on packets already read, for the core benchmark (no device, no
 * syscalls): each of the n packets of `size` bytes at pkts + i * size is copied into buf (cap
 * bytes) as read() would, stamped with CLOCK_MONOTONIC and processed. Stops at the first
 * packet that is not PKS_V_FAST; returns how many were (0 when size > cap). */
uint32_t pks_process_many(pks_table *t, const uint8_t *pkts, uint32_t size, uint32_t n,
                          uint8_t *buf, uint32_t cap, int vnet, pks_meta *m);

pks_table *pks_table_new(uint32_t nslots, uint64_t seed);
/* Loads the state grid (2 x 4 x PKS_STATES bytes: [dir][SYN FIN ACK RST][state]), from which
 * pks_process moves fast flows on FIN and ACK; 0, or -1 for a state out of range */
int pks_table_set_transitions(pks_table *t, const uint8_t *grid, uint32_t len);
/* The idle timeout of each state (PKS_STATES values, seconds); a flow takes its state's
 * when it enters it. 0, or -1 for a bad count or a negative timeout. */
int pks_table_set_timeouts(pks_table *t, const double *timeouts, uint32_t n);
/* Schedules service `id` (at vip:port, host order) in C with the period of n answers in
 * picks (copied), starting at answer `cursor`; n = 0 leaves the service to Python again.
 * 0; -1 no memory, too many services, n > PKS_PERIOD_MAX or cursor >= n */
int pks_service_set(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                    const pks_pick *picks, uint32_t n, uint32_t cursor);
/* Schedules service `id` in C by a hash table: n members (picks, reason ignored), `size`
 * slots each a member index or PKS_NONE; with_port: the client port is hashed too. 0; -1 no
 * memory, too many services, n or size 0 or over PKS_PERIOD_MAX / PKS_SLOTS_MAX, a slot out
 * of range. pks_service_set(..., 0, 0) leaves it to Python again. */
int pks_service_hash(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                     const pks_pick *members, uint32_t n, const uint32_t *slots, uint32_t size,
                     int with_port);
/* Schedules service `id` in C by the least load of its n members (picks: backend, address,
 * port, weight; reason ignored): how = PKS_LEAST_COUNT (lc) or PKS_LEAST_PER_WEIGHT (wlc).
 * 0; -1 no memory, too many services, n 0 or over PKS_PERIOD_MAX, another `how`, or a
 * member not counted (at or above bk_load_cap). pks_service_set(..., 0, 0) leaves it to
 * Python. */
int pks_service_least(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                      const pks_pick *members, uint32_t n, int how);
int pks_service_acl(pks_table *t, uint32_t id, const uint32_t *prefixes, uint32_t nallow,
                    uint32_t ndeny);
/* The key of the hashing schedulers: 0, -1 longer than PKS_HASH_KEY_MAX or empty */
int pks_table_set_hash_key(pks_table *t, const uint8_t *key, uint32_t len);
/* Keyed BLAKE2b (RFC 7693) of data, 8-byte digest as a little-endian integer; key 1..64
 * bytes, data at most 128 */
uint64_t pks_hash64(const uint8_t *key, uint32_t keylen, const uint8_t *data, uint32_t len);
/* The answer index the next flow of service id gets, advanced by one if advance; -1 when
 * the service is not scheduled in C by a period */
int64_t pks_service_next(pks_table *t, uint32_t id, int advance);
/* The SNAT pool for C to open full-NAT flows with (NULL: nat mode, no SNAT), and the
 * addresses its pair numbers stand for (host order, pool->naddrs of them, PKS_SNAT_ADDRS
 * at most): 0, -1 for another count */
int pks_table_set_snat(pks_table *t, pks_snat *pool, const uint32_t *addrs, uint32_t n);

/* Backend numbers below n, at least, are counted (t->bk_load grows by doubling, to
 * bk_load_cap; new ones start at 0 flows): 0; -1 no memory, or n above PKS_NUMBER_MAX. Call
 * it before any flow names a new number. */
int pks_table_set_backends(pks_table *t, uint32_t n);

/* Backend number `backend` sends to the SNAT pool's endpoint ep (so C can free the pair of
 * a flow it ends): 0; -1 no memory, or a number not below PKS_NUMBER_MAX */
int pks_table_set_endpoint(pks_table *t, uint32_t backend, uint32_t ep);

pks_snat *pks_snat_new(uint32_t naddrs, uint32_t lo, uint32_t hi);
void pks_snat_free(pks_snat *p);
/* Endpoint number ep's queue, its walk starting at pair `start`: 0; -1 no memory, ep taken
 * already or not below PKS_NUMBER_MAX */
int pks_snat_add(pks_snat *p, uint32_t ep, uint32_t start);
/* A free pair toward endpoint ep (added before): its number, or -1 when all are in use
 * (counted in exhausted) */
int64_t pks_snat_alloc(pks_snat *p, uint32_t ep, double now);
/* Gives pair n toward ep back (at the back of its ring): 0; -1 bad ep/pair, -2 no memory */
int pks_snat_release(pks_snat *p, uint32_t ep, uint32_t n, double now);
/* Drops endpoint ep's queue (its ring's memory; the number may be added again) once no pair
 * toward it is in use and none was freed within PKS_TIME_WAIT of now, so that the backend's
 * TIME_WAITs are gone and a new queue's fresh walk may hand out any pair: 0; -1 not added or
 * a pair in use, -2 a pair freed too recently */
int pks_snat_drop(pks_snat *p, uint32_t ep, double now);

/* Moves up to max events, oldest first, out of the ring into out; returns how many */
uint32_t pks_events_take(pks_table *t, pks_event *out, uint32_t max);
void pks_table_free(pks_table *t);
/* Indexes a flow at `slot` whose dir-0 packets arrive as k0 and dir-1 packets as k1; each
 * direction is rewritten to the other's key reversed. State NONE, no timer.
 * 0 on success; -1 if either key is already indexed or they are equal (nothing is changed);
 * -2 bad slot/used */
int pks_table_insert(pks_table *t, uint32_t slot, const pks_key *k0, const pks_key *k1);
/* Opens a flow at `slot` for the packet parsed into m, which arrived in direction 0: packets
 * like it become src:sport -> dst:dport, the replies (dst:dport -> src:sport) become the
 * reverse of m's. Counts the packet on the flow, sets created and rewrites it in place. IPv4
 * addresses as host-order integers. 0 on success; -1 / -2 as pks_table_insert, nothing
 * changed. The flow is left in state NONE without a timer: the caller moves it
 * (pks_flow_set_state), or it never expires. */
int pks_flow_open(pks_table *t, uint32_t slot, uint8_t *buf, pks_meta *m, uint32_t src,
                  uint16_t sport, uint32_t dst, uint16_t dport, double now);
/* What direction dir of a used slot's packets are rewritten to */
void pks_flow_nat(const pks_table *t, uint32_t slot, uint8_t dir, pks_nat *out);
/* Moves a used slot's flow to `state` at `now`: the state's timeout, the half-open list, and
 * a timer entry when the new deadline is earlier than the live one. 0; -1 bad slot/state;
 * -3 no memory for the timer entry (the state is set, the old timer stays) */
int pks_flow_set_state(pks_table *t, uint32_t slot, uint8_t state, double now);
/* removes both keys of a used slot, its timer and its place in the half-open list; 0 on
 * success, -1 if the slot is not in use. Only gen survives. */
int pks_table_remove(pks_table *t, uint32_t slot);
/* slot << 1 | dir, or -1 */
int64_t pks_table_lookup(const pks_table *t, const pks_key *k);
/* Idle expiry without a scan: pops timer entries due at `now`; a flow that saw packets since
 * gets a new entry at last_seen + timeout, one that did not has its slot put in out (its
 * timer is gone; the caller removes it). Up to max slots; returns how many. */
uint32_t pks_expire(pks_table *t, double now, uint32_t *out, uint32_t max);
/* the earliest entry's due time (maybe stale: early, never late), or -1 with none */
double pks_next_due(const pks_table *t);
/* The used slots from `from` on, up to max of them into out; returns how many (0: no more) */
uint32_t pks_table_scan(const pks_table *t, uint32_t from, uint32_t *out, uint32_t max);

int pks_parse(const uint8_t *buf, uint32_t len, pks_meta *m);
/* pks_parse after a virtio_net_hdr: sets m->hdr and m->partial, checks csum_start/offset */
int pks_parse_vnet(const uint8_t *buf, uint32_t len, pks_meta *m);
/* vnet: 1 if buf starts with a virtio_net_hdr (a TUN device with IFF_VNET_HDR) */
int pks_process(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m, int vnet);
/* rewrites a packet parsed into m (err == PKS_OK) to n; incremental checksum update.
 * buf is where parsing started: the IP header is at buf + m->hdr */
void pks_rewrite(uint8_t *buf, const pks_meta *m, const pks_nat *n);
/* pks_rewrite with the nat of m's flow and direction */
void pks_apply(pks_table *t, uint8_t *buf, const pks_meta *m);
/* RFC 1071 Internet checksum of buf, starting from a 32-bit partial sum */
uint16_t pks_csum(const uint8_t *buf, uint32_t len, uint32_t sum);
const char *pks_err_name(int err);
