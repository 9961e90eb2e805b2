/* SYN cookies, as the kernel's syncookies and DPVS's SYN proxy: under a SYN flood C answers a
 * client's SYN itself, with a SYN-ACK whose sequence number (the cookie) is a keyed hash of
 * the SYN's tuple, its sequence number and the time, with the MSS it offered; a client's ACK
 * that carries a valid one opens the flow only then, and C makes the handshake with the
 * backend itself. A spoofed SYN costs no table entry and no SNAT pair.
 *
 * The cookie: 5 bits of the time (64 s periods: one is good for 64-128 s), 3 bits of MSS
 * (MSS[]) and 24 bits of BLAKE2b keyed with the switch's cookie key. The SYN-ACK offers no
 * window scale, SACK or timestamps (the cookie cannot hold them) and a window of 0, so the
 * client sends nothing before the backend has answered. The ACK's flow sends the backend a
 * SYN with the client's sequence number and that MSS; the backend's SYN-ACK becomes the
 * client's window update (C then knows seq_delta, the backend's numbers minus the cookie's),
 * and the client's next packet is the backend's ACK. From then on C moves the backend's
 * sequence numbers into the client's view before anything reads them (window tracking,
 * trace) and the client's acknowledgments back on the way out. A backend that resends its
 * SYN-ACK (the client had nothing to send) gets the ACK from C. */
#include "pks_internal.h"

#define COOKIE_PERIOD 64.0  /* seconds of one count of the cookie's time */
#define COOKIE_LIFE 128.0   /* ACKs are checked for cookies this long after the last one */

static const uint16_t MSS[8] = {536, 1200, 1300, 1360, 1400, 1440, 1460, 8960};

int pks_table_set_cookies(pks_table *t, uint32_t from, const uint8_t *key, uint32_t len)
{
    if (!len || len > PKS_HASH_KEY_MAX)
        return -1;
    b2_keyed(t->cookie_state, key, len, 0);
    t->cookie_key_len = len;
    t->cookies_from = from;
    return 0;
}

int pks_cookies_active(const pks_table *t)
{
    return t->cookie_key_len && t->cookies_from != PKS_NONE && t->ho.count >= t->cookies_from;
}

/* the cookie's 24 bits of hash: the SYN's tuple, its sequence number, the time's count */
static uint32_t mac(const pks_table *t, const pks_meta *m, uint32_t isn, uint32_t count)
{
    uint8_t d[20];
    put4(d, m->saddr4);
    put4(d + 4, m->daddr4);
    wr16(d + 8, m->sport);
    wr16(d + 10, m->dport);
    put4(d + 12, isn);
    put4(d + 16, count);
    return (uint32_t)b2_finish(t->cookie_state, d, sizeof d) & 0xffffff;
}

/* A TCP/IPv4 packet at buf + m->hdr, written whole (a 20-byte IP header; the MSS option when
 * mss is not 0), checksums and all, and m made to say so; a virtio_net_hdr before it asks
 * nothing of the device. Its addresses, ports, sequence numbers, flags and window: */
typedef struct {
    uint32_t saddr, daddr;
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t win, mss;
} segment;

static void build(uint8_t *buf, pks_meta *m, const segment *g)
{
    if (m->hdr)
        memset(buf, 0, m->hdr);
    uint8_t *ip = buf + m->hdr, *th = ip + 20;
    uint32_t tl = g->mss ? 24 : 20;
    memset(ip, 0, 20 + tl);
    ip[0] = 0x45;
    wr16(ip + 2, (uint16_t)(20 + tl));
    wr16(ip + 6, 0x4000);                       /* DF */
    ip[8] = 64;
    ip[9] = PKS_PROTO_TCP;
    put4(ip + 12, g->saddr);
    put4(ip + 16, g->daddr);
    wr16(ip + 10, pks_csum(ip, 20, 0));
    wr16(th, g->sport);
    wr16(th + 2, g->dport);
    put4(th + 4, g->seq);
    put4(th + 8, g->ack);
    th[12] = (uint8_t)(tl / 4 << 4);
    th[13] = g->flags;
    wr16(th + 14, g->win);
    if (g->mss) {
        th[20] = 2;
        th[21] = 4;
        wr16(th + 22, g->mss);
    }
    uint32_t sum = (g->saddr >> 16) + (g->saddr & 0xffff) + (g->daddr >> 16)
                   + (g->daddr & 0xffff) + PKS_PROTO_TCP + tl;
    wr16(th + 16, pks_csum(th, tl, sum));
    m->ip_len = (uint16_t)(20 + tl);
    m->l4_off = 20;
    m->payload = 0;
    m->tcp_flags = g->flags;
    m->partial = 0;
}

int cookie_answer(pks_table *t, uint8_t *buf, pks_meta *m, double now)
{
    const uint8_t *th = buf + m->hdr + m->l4_off;
    uint32_t isn = rd32(th + 4);
    const uint8_t *o = tcp_option(th, (uint32_t)(th[12] >> 4) * 4, 2, 4);
    uint16_t want = o ? rd16(o + 2) : MSS[0];
    uint32_t k = 0;                             /* the largest MSS it takes */
    while (k + 1 < 8 && MSS[k + 1] <= want)
        k++;
    uint32_t count = (uint32_t)(now / COOKIE_PERIOD);
    uint32_t cookie = (count & 0x1f) << 27 | k << 24 | mac(t, m, isn, count);
    segment g = {.saddr = m->daddr4, .daddr = m->saddr4, .sport = m->dport, .dport = m->sport,
                 .seq = cookie, .ack = isn + 1, .flags = PKS_TCP_SYN | PKS_TCP_ACK, .win = 0,
                 .mss = MSS[k]};
    build(buf, m, &g);
    t->cookies_sent++;
    t->cookie_last = now;
    return PKS_V_FAST;
}

int cookie_valid(const pks_table *t, const uint8_t *buf, const pks_meta *m, double now,
                 uint32_t *isn)
{
    if (!t->cookie_key_len || now - t->cookie_last >= COOKIE_LIFE)
        return -2;                              /* no cookie out: not a cookie's ACK */
    const uint8_t *th = buf + m->hdr + m->l4_off;
    uint32_t cookie = rd32(th + 8) - 1, seq = rd32(th + 4);
    uint32_t count = (uint32_t)(now / COOKIE_PERIOD);
    for (uint32_t age = 0; age < 2; age++) {
        uint32_t c = count - age;
        if ((c & 0x1f) != cookie >> 27)
            continue;
        /* the client's ISN: one before its ACK's sequence number, or that number itself in
         * a zero-window probe (which sends the byte before the next) */
        for (uint32_t back = 0; back < 2; back++) {
            if (mac(t, m, seq - 1 + back, c) == (cookie & 0xffffff)) {
                *isn = seq - 1 + back;
                return (int)(cookie >> 24 & 7);
            }
        }
    }
    return -1;
}

void cookie_to_syn(uint8_t *buf, pks_meta *m, uint32_t isn, int mss)
{
    const uint8_t *th = buf + m->hdr + m->l4_off;
    segment g = {.saddr = m->saddr4, .daddr = m->daddr4, .sport = m->sport, .dport = m->dport,
                 .seq = isn, .ack = 0, .flags = PKS_TCP_SYN, .win = rd16(th + 14),
                 .mss = MSS[mss & 7]};
    build(buf, m, &g);
}

/* a 32-bit field of the TCP header moved by delta, its checksum with it (a partial sum covers
 * no header field but the pseudo-header's) */
static void move32(uint8_t *buf, const pks_meta *m, uint32_t off, uint32_t delta)
{
    uint8_t *th = buf + m->hdr + m->l4_off;
    uint32_t was = rd32(th + off), now = was + delta;
    put4(th + off, now);
    if (m->partial)
        return;
    uint32_t sum = (uint16_t)~rd16(th + 16);
    sum += (uint16_t)~(was >> 16) + (now >> 16) + (uint16_t)~(was & 0xffff) + (now & 0xffff);
    wr16(th + 16, (uint16_t)~fold(sum));
}

int cookie_inbound(uint8_t *buf, pks_meta *m, pks_flow *f)
{
    uint8_t flags = m->tcp_flags;
    if (m->dir == 0)        /* before the backend answered the client has no window: nothing
                               of it is taken but a pure ACK (a probe, its ACK again), which
                               cookie_outbound makes the backend's SYN again (one lost) */
        return f->cookie == PKS_CK_SYN_SENT
                       && (m->payload
                           || (flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST | PKS_TCP_FIN))
                                  != PKS_TCP_ACK)
                   ? -PKS_E_TCP_WINDOW
                   : 0;
    if (f->cookie == PKS_CK_SYN_SENT) {
        const uint8_t *th = buf + m->hdr + m->l4_off;
        if (!(flags & PKS_TCP_ACK) || rd32(th + 8) != f->seq_end[0])
            return -PKS_E_TCP_WINDOW;       /* a SYN-ACK or RST must acknowledge the SYN C
                                               sent (RFC 5961 3.2 in SYN-SENT): one that
                                               does not is forged */
        if ((flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST)) == (PKS_TCP_SYN | PKS_TCP_ACK)) {
            f->seq_delta = rd32(th + 4) - f->seq_delta;     /* the cookie's, until now */
            f->cookie = PKS_CK_WINDOW;
        } else if (flags & PKS_TCP_RST) {   /* refused: the client's RST at what it expects */
            move32(buf, m, 4, f->seq_delta + 1 - rd32(th + 4));
            return 0;
        } else {
            return -PKS_E_TCP_WINDOW;       /* nothing else comes before the SYN-ACK */
        }
    }
    move32(buf, m, 4, -f->seq_delta);       /* into the client's view */
    return 1;
}

void cookie_undo(uint8_t *buf, const pks_meta *m, const pks_flow *f)
{
    move32(buf, m, 4, f->seq_delta);
}

int cookie_outbound(pks_table *t, uint8_t *buf, pks_meta *m, pks_flow *f)
{
    uint8_t flags = m->tcp_flags;
    const uint8_t *th = buf + m->hdr + m->l4_off;
    if (m->dir == 0) {
        if (f->cookie == PKS_CK_SYN_SENT) {     /* the backend's SYN again, as first sent */
            cookie_to_syn(buf, m, f->seq_end[0] - 1, (int)(f->seq_delta >> 24 & 7));
            pks_apply(t, buf, m);
            return PKS_V_FAST;
        }
        if (flags & PKS_TCP_ACK) {
            move32(buf, m, 8, f->seq_delta);        /* acknowledging the backend's numbers */
            f->cookie = PKS_CK_DONE;
        }
        pks_apply(t, buf, m);
        return PKS_V_FAST;
    }
    if ((flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST)) != (PKS_TCP_SYN | PKS_TCP_ACK)) {
        pks_apply(t, buf, m);
        return PKS_V_FAST;
    }
    pks_nat n;
    pks_flow_nat(t, (uint32_t)m->slot, 1, &n);  /* where the backend's packets go */
    uint32_t seq = rd32(th + 4), ack = rd32(th + 8);
    segment g;
    if (f->cookie == PKS_CK_WINDOW) {
        /* the first SYN-ACK: the client's window update (the cookie's SYN counted) */
        g = (segment){.saddr = rd32(n.saddr), .daddr = rd32(n.daddr), .sport = n.sport,
                      .dport = n.dport, .seq = seq + 1, .ack = ack, .flags = PKS_TCP_ACK,
                      .win = rd16(th + 14), .mss = 0};
        f->cookie = PKS_CK_ANSWERED;
    } else {
        /* again: the backend has not had the ACK; C gives it, as the client would */
        uint32_t win = f->maxwin[0] ? f->maxwin[0] : 65535;
        g = (segment){.saddr = m->daddr4, .daddr = m->saddr4, .sport = m->dport,
                      .dport = m->sport, .seq = ack, .ack = seq + f->seq_delta + 1,
                      .flags = PKS_TCP_ACK, .win = (uint16_t)(win > 65535 ? 65535 : win),
                      .mss = 0};
    }
    build(buf, m, &g);
    return PKS_V_FAST;
}
