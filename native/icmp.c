/* ICMP at the switch: echo replies for the VIPs, and errors about a flow translated through it.
 *
 * A VIP lives nowhere but in the switch, so the switch answers pings to it (a client's first
 * question is "is it up?"). ICMP errors matter more: an error quotes the IP header and at
 * least the first 8 bytes (the ports) of the packet that caused it (RFC 792, RFC 1812
 * 4.3.2.3). When that packet belongs to a switched flow, the error must reach the other side
 * as if the switch were not there, or path MTU discovery breaks (the "fragmentation needed"
 * of RFC 1191) and refused connections hang until they time out instead of failing at once.
 *
 * So an error from the backend side about SNAT:sport > backend:bport goes to the client, with
 * the quoted packet turned back into client:cport > VIP:vport and the outer header VIP >
 * client; one from the client side about VIP:vport > client:cport goes to the backend,
 * quoting backend:bport > SNAT:sport. That is IPVS's ip_vs_nat_icmp() in both directions. In
 * nat mode an error from the client side keeps its sender (the backend routes back through
 * the switch anyway). The quoted IP header's checksum is recomputed; the quoted TCP checksum
 * is adjusted when the quote reaches it (18 bytes of TCP; with the minimum 8 there is no
 * checksum to fix), a UDP one always (its 8 bytes hold it) unless it is 0, none; the ICMP checksum is recomputed over the message. Lengths never change.
 *
 * Echo replies are rate-limited as Linux limits its own (a token bucket: 1000 a second, a
 * burst of 50). Everything else that is ICMP is dropped with its reason: a bad checksum, other
 * types, echo requests to addresses that are no VIP, or beyond the rate, errors quoting
 * something that is no TCP or UDP packet or no known flow, or not sent back to the quoted packet's
 * source (a VIP or SNAT address; the host routes an SNAT address into the switch only from
 * the backends' side, pktswitch/io/tun.py). */
#include "pks_internal.h"

#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define ICMP_UNREACH 3
#define ICMP_PORT_UNREACH 3 /* (its code) */
#define ICMP_HEADER 8       /* type, code, checksum, 4 bytes that depend on the type */
#define QUOTED_L4 8         /* the bytes of the transport header an error must quote at least */
#define TCP_CSUM_END 18     /* quoted TCP bytes that include its checksum field */
#define REPLY_TTL 64        /* Linux's default ip_default_ttl, for the replies the switch sends */
#define ECHO_RATE 1000.0    /* echo replies per second, and the burst beyond it: Linux's */
#define ECHO_BURST 50.0     /* icmp_msgs_per_sec and icmp_msgs_burst */

static int is_error(uint8_t type)
{
    return type == 3 || type == 4 || type == 11 || type == 12; /* unreachable, quench, time
                                                                  exceeded, parameter problem */
}

/* the Internet checksum of buf[off:end] into the 16-bit field at `field` */
static void csum_into(uint8_t *buf, uint32_t off, uint32_t end, uint32_t field)
{
    wr16(buf + field, 0);
    wr16(buf + field, pks_csum(buf + off, end - off, 0));
}

static int is_vip(const pks_table *t, uint32_t addr)
{
    for (uint32_t i = 0; i < t->nsvc; i++)
        if (t->svc[i].vip == addr)
            return 1;
    return 0;
}

static void echo_reply(uint8_t *buf, uint32_t ip, uint32_t l4, uint32_t end)
{
    uint8_t a[4];
    memcpy(a, buf + ip + 12, 4);
    memmove(buf + ip + 12, buf + ip + 16, 4);
    memcpy(buf + ip + 16, a, 4);
    buf[ip + 8] = REPLY_TTL;
    csum_into(buf, ip, l4, ip + 10);
    buf[l4] = ICMP_ECHO_REPLY;
    buf[l4 + 1] = 0;
    csum_into(buf, l4, end, l4 + 2);
}

/* the error's quoted packet and outer header rewritten as the flow's direction `way` is
 * (n, from pks_flow_nat): the quote is a packet of the other direction, so its source becomes
 * n's daddr:dport and its destination n's saddr:sport, its sequence and acknowledgment
 * numbers move by mv[0] and mv[1] (a cookie flow's, cookie.c; mv[1] only when the quote holds
 * them); the outer header speaks for n's saddr (unless keep_sender) toward n's daddr */
static void translate(uint8_t *buf, uint32_t ip, uint32_t l4, uint32_t end, const pks_nat *n,
                      int keep_sender, const uint32_t mv[2])
{
    uint32_t q = l4 + ICMP_HEADER, th = q + (uint32_t)(buf[q] & 0x0f) * 4;
    int udp = buf[q + 9] == PKS_PROTO_UDP;
    /* the quote's TCP seq, and its ack if there (UDP: none) */
    uint32_t words = udp ? 0 : end - th >= 12 ? 2 : 1;
    uint8_t old[20], new[20];
    memcpy(old, buf + q + 12, 8);
    memcpy(old + 8, buf + th, 4 + 4 * words);
    memcpy(new, n->daddr, 4);                  /* the quote's source */
    memcpy(new + 4, n->saddr, 4);              /* and destination */
    wr16(new + 8, n->dport);
    wr16(new + 10, n->sport);
    for (uint32_t i = 0; i < words; i++)
        put4(new + 12 + 4 * i, rd32(old + 12 + 4 * i) + mv[i]);
    memcpy(buf + q + 12, new, 8);
    memcpy(buf + th, new + 8, 4 + 4 * words);
    csum_into(buf, q, th, q + 10);
    uint8_t *field = buf + th + pks_csum_field(buf[q + 9]);
    /* RFC 1624: pseudo-header, ports and numbers, when the quote holds the checksum (a UDP
     * one of 0 is none; one that comes out 0 is 0xffff) */
    if (udp ? rd16(field) != 0 : end - th >= TCP_CSUM_END) {
        uint32_t s = (uint16_t)~rd16(field);
        for (uint32_t i = 0; i < 12 + 4 * words; i += 2)
            s += (uint16_t)~rd16(old + i) + rd16(new + i);
        uint16_t c = (uint16_t)~fold(s);
        wr16(field, c == 0 && udp ? 0xffff : c);
    }
    if (!keep_sender)
        memcpy(buf + ip + 12, n->saddr, 4);
    memcpy(buf + ip + 16, n->daddr, 4);
    csum_into(buf, ip, l4, ip + 10);
    csum_into(buf, l4, end, l4 + 2);
}

/* A cookie flow's backend numbers are not the client's (cookie.c: the client's = the
 * backend's - seq_delta): the moves of a quote of the other way's packet, or -1 when the
 * quote is of the switch's own SYN-ACK (no backend's number known yet) */
static int cookie_moves(const pks_flow *f, uint8_t way, const uint8_t *qth, uint32_t qlen,
                        uint32_t mv[2])
{
    mv[0] = mv[1] = 0;
    if (!f->cookie)
        return 0;
    if (way == 0) {                             /* the quote: a backend's packet, as the
                                                   client saw it */
        if (f->cookie == PKS_CK_SYN_SENT)
            return -1;
        mv[0] = f->seq_delta;
    } else if (qlen >= 14 && (qth[13] & PKS_TCP_ACK)) {
        mv[1] = -f->seq_delta;                  /* the client's ack, as the backend saw it */
    }
    return 0;
}

/* a token of the echo replies' bucket, if there is one at `now` */
static int echo_token(pks_table *t, double now)
{
    double tokens = t->echo_tokens + (now - t->echo_at) * ECHO_RATE;
    if (tokens > ECHO_BURST)
        tokens = ECHO_BURST;
    t->echo_at = now;
    if (tokens < 1.0) {
        t->echo_tokens = tokens;
        return 0;
    }
    t->echo_tokens = tokens - 1.0;
    return 1;
}

/* An error about a packet of the flow's other way (q = !way) quotes its sequence number,
 * which a real one has in flight: from what the receiver (way) acknowledged, or from the
 * SYN while nothing is, up to the end of what q sent. A blind attacker must guess it. */
static int quote_in_flight(const pks_flow *f, uint8_t way, uint32_t seq)
{
    uint8_t q = way ^ 1;
    uint32_t end = f->seq_end[q];
    if (end == 0)
        return 0;                               /* q never sent: nothing to err about */
    uint32_t lo = f->acked[way] ? f->ack[way] : end - 1;
    return (int32_t)(seq - lo) >= 0 && (int32_t)(end - seq) >= 0;
}

int native_icmp(pks_table *t, uint8_t *buf, pks_meta *m, double now)
{
    uint32_t ip = m->hdr, l4 = ip + m->l4_off, end = ip + m->ip_len;
    if (pks_csum(buf + l4, end - l4, 0) != 0)
        return drop_exit(m, PKS_E_ICMP_CHECKSUM);
    if (m->icmp_type == ICMP_ECHO_REQUEST && is_vip(t, m->daddr4)) {
        if (!echo_token(t, now))
            return drop_exit(m, PKS_E_ICMP_RATE);
        echo_reply(buf, ip, l4, end);
        t->icmp_echo_replies++;
        return PKS_V_FAST;
    }
    if (!is_error(m->icmp_type))
        return drop_exit(m, PKS_E_ICMP_OTHER);
    uint32_t q = l4 + ICMP_HEADER;              /* the quoted packet: IPv4, TCP or UDP, its ports */
    if (end - q < 20 || buf[q] >> 4 != 4)
        return drop_exit(m, PKS_E_ICMP_MALFORMED);
    uint32_t ihl = (uint32_t)(buf[q] & 0x0f) * 4;
    uint8_t proto = buf[q + 9];
    if (ihl < 20 || end - q < ihl + QUOTED_L4 || (proto != PKS_PROTO_TCP && proto != PKS_PROTO_UDP))
        return drop_exit(m, PKS_E_ICMP_MALFORMED);
    if (memcmp(buf + q + 12, buf + ip + 16, 4) != 0)  /* the quote's source, the error's
                                                            destination */
        return drop_exit(m, PKS_E_ICMP_ADDRESS);
    /* the quoted packet went out of the switch; the flow knows its answer's key */
    pks_key k;
    memset(&k, 0, sizeof k);
    k.family = 4;
    k.proto = proto;
    memcpy(k.saddr, buf + q + 16, 4);
    memcpy(k.daddr, buf + q + 12, 4);
    k.sport = rd16(buf + q + ihl + 2);
    k.dport = rd16(buf + q + ihl);
    int64_t e = pks_table_lookup(t, &k);
    if (e < 0)
        return drop_exit(m, PKS_E_ICMP_NO_FLOW);
    uint8_t way = (uint8_t)(e & 1);             /* the error travels as a packet of this way */
    uint32_t seq = rd32(buf + q + ihl + 4);
    const pks_flow *f = &t->flows[e >> 1];
    uint32_t mv[2] = {0, 0};
    if (proto == PKS_PROTO_TCP      /* (a UDP flow has no sequence numbers to check) */
        && (!quote_in_flight(f, way, seq)
            || cookie_moves(f, way, buf + q + ihl, end - q - ihl, mv) < 0))
        return drop_exit(m, PKS_E_ICMP_WINDOW);
    /* the backend has no socket on a UDP flow's port: a passive health signal, as an RST
     * answering a SYN is (Python's to weigh) */
    int refused = proto == PKS_PROTO_UDP && way == 1 && m->icmp_type == ICMP_UNREACH
                  && m->icmp_code == ICMP_PORT_UNREACH;
    if (refused && t->ev_count == PKS_EVENTS)
        return slow_exit(t, m, PKS_SLOW_EVENTS);
    pks_nat n;
    pks_flow_nat(t, (uint32_t)(e >> 1), way, &n);
    translate(buf, ip, l4, end, &n, !t->snat && way == 0, mv);
    t->icmp_errors[way]++;
    if (refused)
        event_put(t, (uint32_t)(e >> 1), PKS_EV_REFUSED, f->state, f->state, 1, now, 0);
    return PKS_V_FAST;
}
