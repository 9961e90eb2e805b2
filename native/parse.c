/* Parsing: validate the IP and TCP (or ICMP) headers of a packet into a pks_meta. */
#include "pks_internal.h"

static const char *const err_names[PKS_E_COUNT] = {
    "ok", "short", "ip_version", "ihl", "total_length", "ip_checksum",
    "fragment", "protocol", "l4_short", "tcp_data_offset", "vnet_header",
    "no_flow", "no_service", "acl_denied", "no_backend", "table_full", "snat_exhausted",
    "tuple_busy", "icmp_checksum", "icmp_other", "icmp_malformed", "icmp_no_flow",
    "bad_source", "tcp_checksum", "icmp_rate", "icmp_out_of_window",
    "rst_out_of_window", "fin_out_of_window", "tcp_out_of_window",
    "client_max_flows", "client_rate", "clients_full", "bad_cookie", "icmp_misaddressed",
    "udp_length", "udp_checksum",
};

static const char *const slow_names[PKS_SLOW_COUNT] = {
    "no_state_grid", "event_ring_full", "no_hash_key", "no_snat_endpoint", "no_memory",
    "family",
};

const char *pks_slow_name(int why)
{
    if (why < 0 || why >= PKS_SLOW_COUNT)
        return "unknown";
    return slow_names[why];
}

const char *pks_err_name(int err)
{
    if (err < 0 || err >= PKS_E_COUNT)
        return "unknown";
    return err_names[err];
}

/* a well-formed IPv4 packet's meta: where its parts are, its key */
static int parsed(pks_meta *m, const uint8_t *buf, uint32_t ihl, uint32_t tot, uint8_t proto,
                  uint32_t payload, uint16_t l4_csum, uint16_t sport, uint16_t dport)
{
    m->ip_len = (uint16_t)tot;
    m->l4_off = (uint16_t)ihl;
    m->payload = (uint16_t)payload;
    m->ip_csum = rd16(buf + 10);
    m->l4_csum = l4_csum;
    m->key.family = 4;
    m->key.proto = proto;
    m->key.sport = m->sport = sport;
    m->key.dport = m->dport = dport;
    memcpy(m->key.saddr, buf + 12, 4);
    memcpy(m->key.daddr, buf + 16, 4);
    m->saddr4 = rd32(buf + 12);
    m->daddr4 = rd32(buf + 16);
    return m->err = PKS_OK;
}

int pks_parse(const uint8_t *buf, uint32_t len, pks_meta *m)
{
    memset(&m->key, 0, sizeof m->key);
    m->slot = -1;
    m->dir = 0;
    m->tcp_flags = 0;
    m->payload = 0;
    m->hdr = 0;
    m->partial = 0;
    m->icmp_type = 0;
    m->icmp_code = 0;
    if (len < 20)
        return m->err = PKS_E_SHORT;
    if ((buf[0] >> 4) != 4)
        return m->err = PKS_E_VERSION;
    uint32_t ihl = (uint32_t)(buf[0] & 0x0f) * 4;
    if (ihl < 20)
        return m->err = PKS_E_IHL;
    if (ihl > len)
        return m->err = PKS_E_SHORT;
    uint32_t tot = rd16(buf + 2);
    if (tot < ihl || tot > len)
        return m->err = PKS_E_TOTLEN;
    if (pks_csum(buf, ihl, 0) != 0)
        return m->err = PKS_E_IPCSUM;
    if (rd16(buf + 6) & 0x3fff)                 /* MF set or a fragment offset */
        return m->err = PKS_E_FRAGMENT;
    uint32_t l4len = tot - ihl;
    if (buf[9] == PKS_PROTO_ICMP) {
        if (l4len < 8)                          /* type, code, checksum, 4 bytes of rest */
            return m->err = PKS_E_L4SHORT;
        m->icmp_type = buf[ihl];
        m->icmp_code = buf[ihl + 1];
        return parsed(m, buf, ihl, tot, PKS_PROTO_ICMP, l4len - 8, rd16(buf + ihl + 2), 0, 0);
    }
    if (buf[9] == PKS_PROTO_UDP) {
        if (l4len < 8)
            return m->err = PKS_E_L4SHORT;
        const uint8_t *uh = buf + ihl;
        uint32_t ulen = rd16(uh + 4);           /* a length short of the IP payload leaves the
                                                   rest as padding, as Linux does */
        if (ulen < 8 || ulen > l4len)
            return m->err = PKS_E_UDP_LENGTH;
        return parsed(m, buf, ihl, tot, PKS_PROTO_UDP, ulen - 8, rd16(uh + 6), rd16(uh),
                      rd16(uh + 2));
    }
    if (buf[9] != PKS_PROTO_TCP)
        return m->err = PKS_E_PROTO;
    if (l4len < 20)
        return m->err = PKS_E_L4SHORT;
    const uint8_t *th = buf + ihl;
    uint32_t doff = (uint32_t)(th[12] >> 4) * 4;
    if (doff < 20 || doff > l4len)
        return m->err = PKS_E_TCPOFF;
    m->tcp_flags = th[13];
    return parsed(m, buf, ihl, tot, PKS_PROTO_TCP, l4len - doff, rd16(th + 16), rd16(th),
                  rd16(th + 2));
}

static inline uint16_t rd16le(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

int pks_parse_vnet(const uint8_t *buf, uint32_t len, pks_meta *m)
{
    if (len < PKS_VNET_HDR_LEN) {
        pks_parse(buf, 0, m);
        return m->err = PKS_E_VNET;
    }
    if (pks_parse(buf + PKS_VNET_HDR_LEN, len - PKS_VNET_HDR_LEN, m) != PKS_OK)
        return m->err;
    m->hdr = PKS_VNET_HDR_LEN;
    if (buf[0] & PKS_VNET_F_NEEDS_CSUM) {
        /* the device finishes the checksum at csum_start + csum_offset: TCP's or UDP's */
        uint16_t field = m->key.proto == PKS_PROTO_TCP ? 16 : m->key.proto == PKS_PROTO_UDP ? 6 : 0;
        if (!field || rd16le(buf + 6) != m->l4_off || rd16le(buf + 8) != field)
            return m->err = PKS_E_VNET;
        m->partial = 1;
    }
    return PKS_OK;
}
