/* Tracing (pks_trace.h): pks_process's decision on a packet, recorded with a copy of the
 * packet before and after it. Only while Python traces: the untraced path pays one test. */
#include "pks_internal.h"

#define ALIGN8(n) (((n) + 7u) & ~7u)

int pks_trace_set(pks_table *t, uint8_t *buf, uint32_t cap, uint32_t snap)
{
    if (cap == 0) {
        t->trace_buf = NULL;
        t->trace_cap = t->trace_used = 0;
        return 0;
    }
    if (!buf || ((uintptr_t)buf & 7u) || snap > 65535 || cap < pks_trace_size(snap, snap))
        return -1;
    t->trace_buf = buf;
    t->trace_cap = cap;
    t->trace_used = 0;
    t->trace_snap = snap;
    return 0;
}

uint32_t pks_trace_size(uint32_t len, uint32_t snap)
{
    uint32_t cap = len < snap ? len : snap, out = len + PKS_ROOM < snap ? len + PKS_ROOM : snap;
    return ALIGN8((uint32_t)sizeof(pks_trace_rec) + cap + out);
}

/* the copy's TCP checksum, finished as the device would (the field holds the pseudo-header
 * sum: the checksum is over the segment with it), when the copy holds the field */
static void finish(uint8_t *copy, uint32_t cap, const uint8_t *ip, const pks_meta *m)
{
    uint32_t at = (uint32_t)m->l4_off + pks_csum_field(m->key.proto);
    if (at + 2 <= cap) {
        uint16_t c = pks_csum(ip + m->l4_off, (uint32_t)m->ip_len - m->l4_off, 0);
        wr16(copy + at, c);
    }
}

int trace_process(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m, int vnet)
{
    uint32_t hdr = vnet ? PKS_VNET_HDR_LEN : 0;
    uint32_t ip_len = len > hdr ? len - hdr : 0;
    uint32_t need = pks_trace_size(ip_len, t->trace_snap);
    if (t->trace_cap - t->trace_used < need) {
        int v = process_packet(t, buf, len, now, m, vnet);
        if (v != PKS_V_SLOW)
            t->trace_lost++;
        return v;
    }
    pks_trace_rec *r = (pks_trace_rec *)(t->trace_buf + t->trace_used);
    uint8_t *before = (uint8_t *)(r + 1);
    memset(r, 0, sizeof *r);
    r->len = ip_len;
    r->cap = ip_len < t->trace_snap ? ip_len : t->trace_snap;
    memcpy(r->vnet, buf, len < hdr ? len : hdr);
    memcpy(before, buf + hdr, r->cap);
    /* the flow the packet finds, and its state, before the decision */
    pks_meta pre;
    int32_t slot0 = -1;
    uint32_t gen0 = 0;
    r->from = PKS_S_NONE;
    int parsed = (vnet ? pks_parse_vnet(buf, len, &pre) : pks_parse(buf, len, &pre)) == PKS_OK;
    if (parsed && pre.key.proto == PKS_PROTO_TCP) {
        int64_t e = pks_table_lookup(t, &pre.key);
        if (e >= 0) {
            slot0 = (int32_t)(e >> 1);
            gen0 = t->flows[slot0].gen;
            r->from = t->flows[slot0].state;
        }
    }
    if (parsed && pre.partial) {
        r->partial = 1;
        finish(before, r->cap, buf + hdr, &pre);
    }
    int v = process_packet(t, buf, len, now, m, vnet);
    if (v == PKS_V_SLOW)
        return v;                               /* recorded when Python hands it back */
    r->verdict = (uint8_t)v;
    r->err = v == PKS_V_DROP ? (uint8_t)m->err : 0;
    r->slot = -1;
    r->service = r->backend = PKS_NONE;
    r->to = r->from;
    if (m->slot >= 0 && t->flows[m->slot].used) {
        const pks_flow *f = &t->flows[m->slot];
        r->slot = m->slot;
        r->service = f->service;
        r->backend = f->backend;
        r->client = (uint32_t)f->key[0].saddr[0] << 24 | (uint32_t)f->key[0].saddr[1] << 16
                    | (uint32_t)f->key[0].saddr[2] << 8 | f->key[0].saddr[3];
        r->client_port = f->key[0].sport;
        r->has_client = 1;
        if (m->slot != slot0 || f->gen != gen0)
            r->from = PKS_S_NONE;               /* a flow this packet opened */
        r->to = f->state;
    } else if (m->err == PKS_OK || m->err >= PKS_E_NO_FLOW) {   /* it parsed */
        r->client = m->saddr4;
        r->client_port = m->key.sport;
        r->has_client = 1;
    }
    uint32_t size = (uint32_t)sizeof *r + r->cap;
    if (v == PKS_V_FAST) {                      /* (m->ip_len: the length it leaves with) */
        r->out_len = m->ip_len;
        r->out_cap = r->out_len < t->trace_snap ? r->out_len : t->trace_snap;
        if (sizeof *r + r->cap + r->out_cap > need)     /* (longer than PKS_ROOM allows) */
            r->out_cap = need - (uint32_t)sizeof *r - r->cap;
        memcpy(before + r->cap, buf + hdr, r->out_cap);
        if (r->partial && m->partial)           /* (a packet of C's own is not partial) */
            finish(before + r->cap, r->out_cap, buf + hdr, m);
        size += r->out_cap;
    }
    r->size = ALIGN8(size);
    r->t = now;
    t->trace_used += r->size;
    return v;
}
