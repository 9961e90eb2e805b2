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
 *   rewrite is applied and the verdict is PKS_V_FAST. Otherwise (a new flow, SYN, RST, a flow
 *   Python keeps for itself, or a full event ring) Python gets PKS_V_SLOW, drives the state
 *   machine in tcpstate.py and calls pks_apply() for the rewrite. Malformed packets give
 *   PKS_V_DROP with the reason in meta->err; nothing is written to the buffer in that case.
 *
 *   Flow storage is owned here (a flat array indexed by slot) so that the fast path never
 *   calls back into Python; which slot a flow uses and its timers are Python's, and Python
 *   applies the events before it decides on any packet, so both sides agree on every state.
 *   Keys are family-independent (16-byte addresses) so IPv6 and UDP fit without redesign.
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
    pks_key key[2];     /* dir 0 and dir 1 as they arrive */
    pks_nat nat[2];     /* what each direction is rewritten to */
    uint64_t pkts[2];
    uint64_t bytes[2];
    double last_seen;   /* `now` of the last packet seen on the flow */
    uint32_t ack[2];    /* the highest acknowledgment number sent each way (to reset a flow) */
    uint32_t seq_end[2];/* the highest sequence number + length sent each way */
    uint8_t acked[2];   /* an ACK was seen that way: ack[] holds something */
    uint8_t used;
    uint8_t fast;       /* set by Python: C may decide on packets without SYN or RST */
    uint8_t state;      /* the TCP state (Python's tcpstate.State); C moves it on FIN/ACK */
    uint8_t measured;   /* the first response after the first request was timed */
    uint8_t synacked;   /* C reported the backend's first SYN-ACK */
    double req_at;      /* when the client's first payload was seen, 0: not yet */
} pks_flow;

/* What C did on its own that Python must know (pks_events_take): a state change, or the
 * first response timed. Python applies them in order before it decides on any packet. */
#define PKS_EV_STATE 1      /* from -> to, at t */
#define PKS_EV_RESPONSE 2   /* the first response came `value` seconds after the request */
#define PKS_EV_SYNACK 3     /* the backend's first SYN-ACK, at t */
#define PKS_EVENTS 1024     /* ring size: when it is full, C leaves packets to Python */

typedef struct {
    uint32_t slot;
    uint8_t kind;
    uint8_t from;
    uint8_t to;
    uint8_t dir;
    double t;
    double value;
} pks_event;

typedef struct {
    uint32_t nslots;    /* flows the table can hold */
    uint32_t nkeys;     /* keys in the index (2 per flow) */
    uint32_t mask;      /* index capacity - 1 (a power of two) */
    uint64_t seed;
    uint32_t *index;    /* open addressing, linear probing: slot << 1 | dir, or 0xffffffff */
    pks_flow *flows;
    uint8_t trans[2][4][PKS_STATES]; /* next state by [dir][event][state]; event: SYN FIN ACK RST */
    uint8_t has_trans;  /* trans is loaded: fast flows change state in C */
    uint32_t ev_head;   /* the event ring: oldest event, and how many */
    uint32_t ev_count;
    pks_event events[PKS_EVENTS];
} pks_table;

/* pks_drain: the established-flow loop in C, for a TUN device opened non-blocking */
#define PKS_D_EMPTY 0   /* the device has no more packets */
#define PKS_D_PYTHON 1  /* buf holds a packet Python must decide on (len, verdict, now, m) */
#define PKS_D_BUDGET 2  /* budget packets forwarded, more may be waiting */
#define PKS_D_ERROR 3   /* read failed: errno in err */
#define PKS_D_OTHER 4   /* while waiting, another fd of the caller's epoll set became ready */

typedef struct {
    uint32_t forwarded;     /* packets C read, rewrote and wrote back by itself */
    uint32_t largest;       /* the largest read so far, in bytes (never reset) */
    uint32_t write_errors;  /* writes the kernel refused; the last errno in err */
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
 * data.fd the fd as Python's select.epoll registers it), for `wait` at most in all. Only fd ready: back
 * to reading; any other fd ready: PKS_D_OTHER, so the caller serves it (level-triggered, its
 * own epoll_wait reports it again). It does not wait, and says PKS_D_EMPTY, when the event
 * ring holds anything (Python applies events, which may move its timers, before it sleeps),
 * when the wait ends, or when a signal interrupts it (Python runs its handlers). */
void pks_drain(pks_table *t, int fd, uint8_t *buf, uint32_t cap, int vnet, uint32_t budget,
               pks_meta *m, int epfd, double wait, pks_drain_result *r);

pks_table *pks_table_new(uint32_t nslots, uint64_t seed);
/* Loads the state grid (2 x 4 x PKS_STATES bytes: [dir][SYN FIN ACK RST][state]), from which
 * pks_process moves fast flows on FIN and ACK; 0, or -1 for a state out of range */
int pks_table_set_transitions(pks_table *t, const uint8_t *grid, uint32_t len);
/* Moves up to max events, oldest first, out of the ring into out; returns how many */
uint32_t pks_events_take(pks_table *t, pks_event *out, uint32_t max);
void pks_table_free(pks_table *t);
/* 0 on success; -1 if either key is already indexed (nothing is changed); -2 bad slot/used */
int pks_table_insert(pks_table *t, uint32_t slot, const pks_key *k0, const pks_nat *n0,
                     const pks_key *k1, const pks_nat *n1);
/* Opens a flow at `slot` for the packet parsed into m, which arrived in direction 0: packets
 * like it become src:sport -> dst:dport, the replies (dst:dport -> src:sport) become the
 * reverse of m's. Counts the packet on the flow and rewrites it in place. IPv4 addresses as
 * host-order integers. 0 on success; -1 / -2 as pks_table_insert, nothing changed. */
int pks_flow_open(pks_table *t, uint32_t slot, uint8_t *buf, pks_meta *m, uint32_t src,
                  uint16_t sport, uint32_t dst, uint16_t dport, double now);
/* removes both keys of a used slot; 0 on success, -1 if the slot is not in use */
int pks_table_remove(pks_table *t, uint32_t slot);
/* slot << 1 | dir, or -1 */
int64_t pks_table_lookup(const pks_table *t, const pks_key *k);

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
