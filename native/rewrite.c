/* The NAT rewrite: addresses and ports of one packet, checksums updated incrementally
 * (RFC 1624). A UDP checksum of 0 over IPv4 means none and stays 0; one that comes out 0 is
 * written as 0xffff, its other form in one's complement (RFC 768). */
#include "pks_internal.h"

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), summed over every 16-bit word that changes. */
static inline uint32_t delta16(uint32_t acc, uint16_t old, uint16_t new)
{
    return acc + (uint16_t)~old + new;
}

void pks_rewrite(uint8_t *buf, const pks_meta *m, const pks_nat *n)
{
    buf += m->hdr;
    uint8_t *th = buf + m->l4_off;
    uint32_t ip = 0, l4 = 0;
    for (int i = 0; i < 4; i += 2) {
        uint16_t os = rd16(buf + 12 + i), ns = rd16(n->saddr + i);
        uint16_t od = rd16(buf + 16 + i), nd = rd16(n->daddr + i);
        ip = delta16(delta16(ip, os, ns), od, nd);
    }
    l4 = ip;                                    /* the addresses are in the pseudo-header */
    if (!m->partial) {                          /* a partial sum covers no ports */
        l4 = delta16(l4, rd16(th), n->sport);
        l4 = delta16(l4, rd16(th + 2), n->dport);
    }

    memcpy(buf + 12, n->saddr, 4);
    memcpy(buf + 16, n->daddr, 4);
    wr16(th, n->sport);
    wr16(th + 2, n->dport);
    wr16(buf + 10, (uint16_t)~fold((uint16_t)~rd16(buf + 10) + ip));
    uint8_t *field = th + pks_csum_field(m->key.proto);
    if (m->partial) {                           /* the field holds the sum itself */
        wr16(field, (uint16_t)fold(rd16(field) + l4));
    } else if (m->key.proto != PKS_PROTO_UDP || rd16(field) != 0) {
        uint16_t c = (uint16_t)~fold((uint16_t)~rd16(field) + l4);
        wr16(field, c == 0 && m->key.proto == PKS_PROTO_UDP ? 0xffff : c);
    }
}
