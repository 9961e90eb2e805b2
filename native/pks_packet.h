/* Packets: verdicts, parse errors, the parsed view (pks_meta), checksums and the rewrite. */
#pragma once
#include <stdint.h>

/* verdicts of pks_process */
#define PKS_V_SLOW 0
#define PKS_V_FAST 1
#define PKS_V_DROP 2

/* why a packet is dropped (meta->err with PKS_V_DROP; names in pks_err_name()): a parse
 * error, or what C decided about a packet no flow takes (PKS_E_NO_FLOW on) */
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
#define PKS_E_NO_FLOW 11        /* no flow, and not a SYN that opens one */
#define PKS_E_NO_SERVICE 12     /* a SYN to no service's VIP and port */
#define PKS_E_ACL 13            /* a SYN from a client the service's access list refuses */
#define PKS_E_NO_BACKEND 14     /* no backend of the service takes new flows */
#define PKS_E_TABLE_FULL 15     /* the table is full and no half-open flow can make room */
#define PKS_E_SNAT 16           /* every SNAT pair toward the backend is in use */
#define PKS_E_TUPLE 17          /* the new flow's keys belong to another flow already */
#define PKS_E_ICMP_CHECKSUM 18  /* ICMP: the message's checksum is wrong */
#define PKS_E_ICMP_OTHER 19     /* ICMP: a type the switch does not handle, an echo request
                                   to no VIP */
#define PKS_E_ICMP_MALFORMED 20 /* ICMP: an error that quotes no TCP or UDP packet in full */
#define PKS_E_ICMP_NO_FLOW 21   /* ICMP: an error about no known flow */
#define PKS_E_BAD_SOURCE 22     /* a SYN from an address no client has (the switch's own, a
                                   VIP or SNAT address; loopback, 0/8, multicast, 240/4) */
#define PKS_E_TCP_CHECKSUM 23   /* a SYN whose TCP checksum is wrong */
#define PKS_E_ICMP_RATE 24      /* ICMP: an echo request beyond the replies' rate */
#define PKS_E_ICMP_WINDOW 25    /* ICMP: an error quoting a sequence number its flow does not
                                   have in flight */
#define PKS_E_RST_WINDOW 26    /* an RST of a flow outside the window its receiver takes */
#define PKS_E_FIN_WINDOW 27    /* a FIN of a flow outside the window (native/window.c) */
#define PKS_E_TCP_WINDOW 28    /* data or an ACK of a flow outside the window, or acknowledging
                                  what the other way never sent */
#define PKS_E_CLIENT_FLOWS 29  /* a SYN from a client with its service's most flows per client */
#define PKS_E_CLIENT_RATE 30   /* a SYN from a client past its service's new flows per second */
#define PKS_E_CLIENTS_FULL 31  /* a SYN from a new client while the client table is full */
#define PKS_E_BAD_COOKIE 32    /* an ACK of no flow while SYN cookies are out, whose cookie is
                                  not one C sent (or is older than two minutes) */
#define PKS_E_ICMP_ADDRESS 33  /* ICMP: an error not addressed to the source of the packet it
                                  quotes (RFC 1122 3.2.2: errors go back to that source) */
#define PKS_E_UDP_LENGTH 34    /* UDP: a length field under 8 or past the IP packet's end */
#define PKS_E_UDP_CHECKSUM 35  /* UDP: a new flow's first datagram with a wrong checksum */
#define PKS_E_COUNT 36

/* why C left a packet to Python (meta->slow with PKS_V_SLOW; names in pks_slow_name(); each
 * counted in the table's slow[]) */
#define PKS_SLOW_NO_GRID 0      /* no state grid loaded */
#define PKS_SLOW_EVENTS 1       /* the event ring has no room for what C would tell */
#define PKS_SLOW_NO_KEY 2       /* a hashed service, and no hash key */
#define PKS_SLOW_NO_ENDPOINT 3  /* a backend whose SNAT queue C does not know */
#define PKS_SLOW_NO_MEMORY 4    /* no memory for the flow's timer */
#define PKS_SLOW_FAMILY 5       /* an address family C does not open flows for */
#define PKS_SLOW_COUNT 6

/* virtio_net_hdr (include/uapi/linux/virtio_net.h): what a TUN device opened with IFF_VNET_HDR
 * puts before each packet. NEEDS_CSUM: the TCP checksum field holds only the pseudo-header sum
 * (not complemented) and the device finishes it from csum_start; the rewrite then adjusts that
 * sum for address changes only, as ports are not part of it. */
#define PKS_VNET_HDR_LEN 10
#define PKS_VNET_F_NEEDS_CSUM 1

/* transport protocols parsed: TCP and UDP are switched; ICMP is parsed only as far as its type
 * and code (native/icmp.c: echo replies, errors about a flow) */
#define PKS_PROTO_ICMP 1
#define PKS_PROTO_TCP 6
#define PKS_PROTO_UDP 17

#define PKS_STATES 11    /* TCP states in Python's tcpstate.State */

#define PKS_TCP_FIN 1
#define PKS_TCP_SYN 2
#define PKS_TCP_RST 4
#define PKS_TCP_PSH 8
#define PKS_TCP_ACK 16

typedef struct {
    uint8_t family;     /* 4 (6 later) */
    uint8_t proto;      /* PKS_PROTO_TCP, PKS_PROTO_UDP (PKS_PROTO_ICMP: no flow's) */
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
    uint16_t l4_csum;   /* transport checksum as read (UDP: 0 is none, over IPv4) */
    uint16_t sport;     /* = key.sport, key.dport, and the IPv4 addresses as host-order */
    uint16_t dport;     /* integers: cheap for Python to read on the new-flow path */
    uint32_t saddr4;
    uint32_t daddr4;
    uint8_t icmp_type;  /* ICMP (key.proto 1): type and code; the ports are 0 */
    uint8_t icmp_code;
    uint8_t slow;       /* with PKS_V_SLOW: PKS_SLOW_*, why */
    pks_key key;
} pks_meta;

int pks_parse(const uint8_t *buf, uint32_t len, pks_meta *m);
/* pks_parse after a virtio_net_hdr: sets m->hdr and m->partial, checks csum_start/offset */
int pks_parse_vnet(const uint8_t *buf, uint32_t len, pks_meta *m);

/* rewrites a packet parsed into m (err == PKS_OK) to n; incremental checksum update.
 * buf is where parsing started: the IP header is at buf + m->hdr */
void pks_rewrite(uint8_t *buf, const pks_meta *m, const pks_nat *n);

/* RFC 1071 Internet checksum of buf, starting from a 32-bit partial sum */
uint16_t pks_csum(const uint8_t *buf, uint32_t len, uint32_t sum);
const char *pks_err_name(int err);
const char *pks_slow_name(int why);
