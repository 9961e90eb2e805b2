/* Checks of parsing, checksums and the rewrite of one packet. */
#include "fuzz.h"

/* RFC 1071 the slow, obvious way: independent of pks_csum's loop. */
uint16_t ref_csum(const uint8_t *buf, uint32_t len, uint32_t sum)
{
    uint64_t s = sum;
    for (uint32_t i = 0; i < len; i++)
        s += (i & 1) ? buf[i] : (uint32_t)buf[i] << 8;
    while (s > 0xffff)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)(0xffff - s);
}

/* where m's transport checksum field is (TCP 16, UDP 6), and the bytes it covers (TCP the
 * segment, UDP what its length field says) */
uint32_t csum_at(const pks_meta *m) { return m->key.proto == PKS_PROTO_UDP ? 6 : 16; }

uint32_t l4_covered(const uint8_t *buf, const pks_meta *m)
{
    return m->key.proto == PKS_PROTO_UDP ? get16(buf + m->l4_off + 4)
                                         : (uint32_t)m->ip_len - m->l4_off;
}

/* partial sum of the TCP or UDP pseudo-header of an IPv4 packet */
uint32_t pseudo_sum(const uint8_t *buf, uint32_t l4len, uint8_t proto)
{
    uint32_t s = 0;
    for (int i = 12; i < 20; i += 2)
        s += get16(buf + i);
    return s + proto + l4len;
}

int l4_csum_ok(const uint8_t *buf, const pks_meta *m)
{
    uint32_t l4len = l4_covered(buf, m);
    return pks_csum(buf + m->l4_off, l4len, pseudo_sum(buf, l4len, m->key.proto)) == 0;
}

/* the checksum a sender would write: computed with the field taken as 0 */
uint16_t full_ip_csum(const uint8_t *buf, uint32_t ihl)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i < ihl; i += 2)
        if (i != 10)
            s += get16(buf + i);
    return ref_csum(NULL, 0, s);
}

uint16_t full_l4_csum(const uint8_t *buf, const pks_meta *m)
{
    uint32_t l4len = l4_covered(buf, m);
    const uint8_t *th = buf + m->l4_off;
    uint32_t s = pseudo_sum(buf, l4len, m->key.proto) + 0xffff - get16(th + csum_at(m));
    return pks_csum(th, l4len, s);                      /* (the field taken as 0) */
}

/* equal as one's complement numbers: 0x0000 and 0xffff are both zero */
int same_csum(uint16_t a, uint16_t b)
{
    return a == b || ((a == 0 || a == 0xffff) && (b == 0 || b == 0xffff));
}

int is_rewritable_byte(uint32_t i, uint32_t l4, uint32_t field)
{
    return (i >= 10 && i < 20) || (i >= l4 && i < l4 + 4) || i == l4 + field
           || i == l4 + field + 1;
}

void check_meta(const uint8_t *buf, uint32_t len, const pks_meta *m)
{
    CHECK(m->err == PKS_OK);
    CHECK(m->ip_len <= len && m->ip_len == get16(buf + 2));
    CHECK(m->l4_off == (buf[0] & 0x0f) * 4 && m->l4_off >= 20);
    if (buf[9] == PKS_PROTO_UDP) {
        CHECK(m->l4_off + 8u <= m->ip_len);
        uint32_t ulen = get16(buf + m->l4_off + 4);
        CHECK(ulen >= 8 && ulen <= m->ip_len - m->l4_off && m->payload == ulen - 8);
        CHECK(m->tcp_flags == 0 && m->key.proto == PKS_PROTO_UDP);
    } else {
        CHECK(m->l4_off + 20u <= m->ip_len && buf[9] == PKS_PROTO_TCP);
        uint32_t doff = (uint32_t)(buf[m->l4_off + 12] >> 4) * 4;
        CHECK(doff >= 20 && m->payload == m->ip_len - m->l4_off - doff);
        CHECK(m->tcp_flags == buf[m->l4_off + 13] && m->key.proto == PKS_PROTO_TCP);
    }
    CHECK(m->ip_csum == get16(buf + 10) && m->l4_csum == get16(buf + m->l4_off + csum_at(m)));
    CHECK(m->slot == -1 && m->dir == 0);
    CHECK(m->key.family == 4 && m->key.pad == 0);
    CHECK(m->key.sport == get16(buf + m->l4_off) && m->key.dport == get16(buf + m->l4_off + 2));
    CHECK(m->sport == m->key.sport && m->dport == m->key.dport);
    CHECK(m->saddr4 == get32(buf + 12) && m->daddr4 == get32(buf + 16));
    CHECK(memcmp(m->key.saddr, buf + 12, 4) == 0 && memcmp(m->key.daddr, buf + 16, 4) == 0);
    static const uint8_t zero[12];
    CHECK(memcmp(m->key.saddr + 4, zero, 12) == 0 && memcmp(m->key.daddr + 4, zero, 12) == 0);
    CHECK(pks_csum(buf, m->l4_off, 0) == 0);
    CHECK((buf[6] << 8 | buf[7]) % 0x4000 == 0);
}

/* an ICMP packet: parsed as far as its type and code, with no ports */
void check_icmp_meta(const uint8_t *buf, uint32_t len, const pks_meta *m)
{
    CHECK(m->err == PKS_OK && buf[9] == PKS_PROTO_ICMP);
    CHECK(m->ip_len <= len && m->ip_len == get16(buf + 2));
    CHECK(m->l4_off == (buf[0] & 0x0f) * 4 && m->l4_off >= 20);
    CHECK(m->l4_off + 8u <= m->ip_len && m->payload == m->ip_len - m->l4_off - 8);
    CHECK(m->icmp_type == buf[m->l4_off] && m->icmp_code == buf[m->l4_off + 1]);
    CHECK(m->ip_csum == get16(buf + 10) && m->l4_csum == get16(buf + m->l4_off + 2));
    CHECK(m->tcp_flags == 0 && m->slot == -1 && m->dir == 0);
    CHECK(m->key.family == 4 && m->key.proto == PKS_PROTO_ICMP && m->key.pad == 0);
    CHECK(m->key.sport == 0 && m->key.dport == 0 && m->sport == 0 && m->dport == 0);
    CHECK(m->saddr4 == get32(buf + 12) && m->daddr4 == get32(buf + 16));
    CHECK(pks_csum(buf, m->l4_off, 0) == 0);
    CHECK((buf[6] << 8 | buf[7]) % 0x4000 == 0);
}

/* a partial checksum field (virtio NEEDS_CSUM) minus the pseudo-header sum, mod 0xffff: 0 when
 * the sender wrote the sum it should; a rewrite must keep it, whatever it is */
uint32_t partial_residue(const uint8_t *ip, const pks_meta *m)
{
    uint32_t l4len = l4_covered(ip, m);
    uint32_t field = get16(ip + m->l4_off + csum_at(m)) % 0xffff;
    return (field + 0xffff - pseudo_sum(ip, l4len, m->key.proto) % 0xffff) % 0xffff;
}

int parse_mode(const uint8_t *buf, uint32_t len, pks_meta *m, int vnet)
{
    return vnet ? pks_parse_vnet(buf, len, m) : pks_parse(buf, len, m);
}

/* `after` is `before` rewritten to n; m is before's parse (in mode vnet) */
void check_rewrite(const uint8_t *before, const uint8_t *after, uint32_t len,
                          const pks_meta *m, const pks_nat *n, int vnet)
{
    uint32_t h = m->hdr, l4 = m->l4_off;
    for (uint32_t i = 0; i < len; i++)
        if (before[i] != after[i])
            CHECK(i >= h && is_rewritable_byte(i - h, l4, csum_at(m)));
    const uint8_t *b = before + h, *a = after + h;
    CHECK(memcmp(a + 12, n->saddr, 4) == 0 && memcmp(a + 16, n->daddr, 4) == 0);
    CHECK(get16(a + l4) == n->sport && get16(a + l4 + 2) == n->dport);

    CHECK(pks_csum(a, l4, 0) == 0);
    if (get16(b + 10) != 0xffff)
        CHECK(get16(a + 10) == full_ip_csum(a, l4));

    uint32_t at = l4 + csum_at(m);
    int udp = m->key.proto == PKS_PROTO_UDP;
    if (m->partial) {
        CHECK(partial_residue(a, m) == partial_residue(b, m));
    } else if (udp && get16(b + at) == 0) {     /* none: it stays none */
        CHECK(get16(a + at) == 0);
    } else {
        int ok_before = l4_csum_ok(b, m);
        CHECK(l4_csum_ok(a, m) == ok_before);
        uint16_t full = full_l4_csum(a, m);
        if (udp)                                /* a sum of 0 is sent as 0xffff (RFC 768) */
            CHECK(get16(a + at) != 0 && (!ok_before || get16(a + at) == (full ? full : 0xffff)));
        else if (ok_before && get16(b + at) != 0xffff)
            CHECK(get16(a + at) == full);
    }

    pks_meta m2;
    CHECK(parse_mode(after, len, &m2, vnet) == PKS_OK);
    check_meta(a, len - h, &m2);
    CHECK(m2.hdr == m->hdr && m2.partial == m->partial);
    CHECK(m2.ip_len == m->ip_len && m2.l4_off == m->l4_off && m2.payload == m->payload);
    CHECK(m2.tcp_flags == m->tcp_flags);
}

/* (a) parse and (b) rewrite; returns the parse in *m */
void parse_and_rewrite(const uint8_t *data, size_t size, pks_meta *m, int vnet)
{
    uint8_t *pkt = malloc(size);
    CHECK(pkt != NULL);
    memcpy(pkt, data, size);
    int err = parse_mode(pkt, (uint32_t)size, m, vnet);
    CHECK(err == m->err && err >= 0 && err < PKS_E_COUNT);
    CHECK(strcmp(pks_err_name(err), "unknown") != 0);
    CHECK(memcmp(pkt, data, size) == 0);
    if (vnet) { /* the header adds one error and one flag to what pks_parse says */
        pks_meta inner;
        if (size < PKS_VNET_HDR_LEN) {
            CHECK(err == PKS_E_VNET);
        } else if (pks_parse(pkt + PKS_VNET_HDR_LEN, (uint32_t)(size - PKS_VNET_HDR_LEN), &inner)
                   != PKS_OK) {
            CHECK(err == inner.err);
        } else if (data[0] & PKS_VNET_F_NEEDS_CSUM) {
            int start_ok = (data[6] | data[7] << 8) == inner.l4_off;
            int l4 = inner.key.proto == PKS_PROTO_TCP || inner.key.proto == PKS_PROTO_UDP;
            int offset_ok = l4 && (data[8] | data[9] << 8) == csum_at(&inner);
            CHECK(err == (start_ok && offset_ok ? PKS_OK : PKS_E_VNET));
            CHECK(err != PKS_OK || m->partial == 1);
        } else {
            CHECK(err == PKS_OK && m->partial == 0);
        }
    }
    if (err != PKS_OK) {
        free(pkt);
        return;
    }
    uint32_t h = vnet ? PKS_VNET_HDR_LEN : 0;
    CHECK(m->hdr == h && m->partial == (vnet && (data[0] & PKS_VNET_F_NEEDS_CSUM)));
    if (m->key.proto == PKS_PROTO_ICMP) { /* Python's to handle: nothing to rewrite here */
        check_icmp_meta(pkt + h, (uint32_t)(size - h), m);
        free(pkt);
        return;
    }
    check_meta(pkt + h, (uint32_t)(size - h), m);

    pks_nat n;
    make_nat(data, size, 0, &n);
    pks_rewrite(pkt, m, &n);
    check_rewrite(data, pkt, (uint32_t)size, m, &n, vnet);

    /* and back: the reverse nat restores addresses and ports, and the checksums up to the
     * two encodings of zero */
    pks_nat back;
    memset(&back, 0, sizeof back);
    memcpy(back.saddr, data + h + 12, 4);
    memcpy(back.daddr, data + h + 16, 4);
    back.sport = m->key.sport;
    back.dport = m->key.dport;
    uint8_t *mid = malloc(size);
    CHECK(mid != NULL);
    memcpy(mid, pkt, size);
    pks_meta mm;
    CHECK(parse_mode(mid, (uint32_t)size, &mm, vnet) == PKS_OK);
    pks_rewrite(pkt, &mm, &back);
    check_rewrite(mid, pkt, (uint32_t)size, &mm, &back, vnet);
    uint32_t ic = h + 10, tc = h + m->l4_off + csum_at(m);
    for (uint32_t i = 0; i < size; i++)
        if (i != ic && i != ic + 1 && i != tc && i != tc + 1)
            CHECK(pkt[i] == data[i]);
    CHECK(same_csum(get16(pkt + ic), get16(data + ic)));
    CHECK(same_csum(get16(pkt + tc), get16(data + tc)));
    free(mid);
    free(pkt);
}
