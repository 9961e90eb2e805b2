/* pktswitch native core: see pks.h for the theory of operation. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "pks.h"

#define EMPTY 0xffffffffu
/* The timer heap's first allocation, and the stale entries it tolerates before compaction;
 * the fuzz build makes both tiny so that growth and compaction run on its small tables. */
#ifndef HEAP_FIRST
#define HEAP_FIRST 1024
#endif
#ifndef COMPACT_MIN
#define COMPACT_MIN PKS_COMPACT_MIN
#endif

static const char *const err_names[PKS_E_COUNT] = {
    "ok", "short", "ip_version", "ihl", "total_length", "ip_checksum",
    "fragment", "protocol", "l4_short", "tcp_data_offset", "vnet_header",
};

const char *pks_err_name(int err)
{
    if (err < 0 || err >= PKS_E_COUNT)
        return "unknown";
    return err_names[err];
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static inline uint32_t fold(uint32_t s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return s;
}

uint16_t pks_csum(const uint8_t *buf, uint32_t len, uint32_t sum)
{
    uint64_t s = sum;
    uint32_t i = 0;
    for (; i + 1 < len; i += 2)
        s += rd16(buf + i);
    if (len & 1)
        s += (uint32_t)buf[len - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* ------------------------------------------------------------------ parse */

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
        m->ip_len = (uint16_t)tot;
        m->l4_off = (uint16_t)ihl;
        m->payload = (uint16_t)(l4len - 8);
        m->ip_csum = rd16(buf + 10);
        m->l4_csum = rd16(buf + ihl + 2);
        m->icmp_type = buf[ihl];
        m->icmp_code = buf[ihl + 1];
        m->key.family = 4;
        m->key.proto = PKS_PROTO_ICMP;
        m->key.sport = m->sport = 0;
        m->key.dport = m->dport = 0;
        memcpy(m->key.saddr, buf + 12, 4);
        memcpy(m->key.daddr, buf + 16, 4);
        m->saddr4 = (uint32_t)rd16(buf + 12) << 16 | rd16(buf + 14);
        m->daddr4 = (uint32_t)rd16(buf + 16) << 16 | rd16(buf + 18);
        return m->err = PKS_OK;
    }
    if (buf[9] != PKS_PROTO_TCP)
        return m->err = PKS_E_PROTO;
    if (l4len < 20)
        return m->err = PKS_E_L4SHORT;
    const uint8_t *th = buf + ihl;
    uint32_t doff = (uint32_t)(th[12] >> 4) * 4;
    if (doff < 20 || doff > l4len)
        return m->err = PKS_E_TCPOFF;

    m->ip_len = (uint16_t)tot;
    m->l4_off = (uint16_t)ihl;
    m->payload = (uint16_t)(l4len - doff);
    m->ip_csum = rd16(buf + 10);
    m->l4_csum = rd16(th + 16);
    m->tcp_flags = th[13];
    m->key.family = 4;
    m->key.proto = PKS_PROTO_TCP;
    m->key.sport = m->sport = rd16(th);
    m->key.dport = m->dport = rd16(th + 2);
    memcpy(m->key.saddr, buf + 12, 4);
    memcpy(m->key.daddr, buf + 16, 4);
    m->saddr4 = (uint32_t)rd16(buf + 12) << 16 | rd16(buf + 14);
    m->daddr4 = (uint32_t)rd16(buf + 16) << 16 | rd16(buf + 18);
    return m->err = PKS_OK;
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
        /* the device finishes the checksum at csum_start + csum_offset: it must be TCP's */
        if (m->key.proto != PKS_PROTO_TCP || rd16le(buf + 6) != m->l4_off
            || rd16le(buf + 8) != 16)
            return m->err = PKS_E_VNET;
        m->partial = 1;
    }
    return PKS_OK;
}

/* ---------------------------------------------------------------- rewrite */

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
    if (m->partial)                             /* the field holds the sum itself */
        wr16(th + 16, (uint16_t)fold(rd16(th + 16) + l4));
    else
        wr16(th + 16, (uint16_t)~fold((uint16_t)~rd16(th + 16) + l4));
}

/* ------------------------------------------------------------- flow index */

static inline uint64_t key_hash(const pks_table *t, const pks_key *k)
{
    uint64_t w[5];
    memcpy(w, k, sizeof w);
    uint64_t h = t->seed;
    for (int i = 0; i < 5; i++) {
        h ^= w[i];
        h *= 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    return h;
}

static inline const pks_key *entry_key(const pks_table *t, uint32_t e)
{
    return &t->flows[e >> 1].key[e & 1];
}

int64_t pks_table_lookup(const pks_table *t, const pks_key *k)
{
    uint32_t i = (uint32_t)key_hash(t, k) & t->mask;
    for (;;) {
        uint32_t e = t->index[i];
        if (e == EMPTY)
            return -1;
        if (memcmp(entry_key(t, e), k, sizeof *k) == 0)
            return e;
        i = (i + 1) & t->mask;
    }
}

static void index_put(pks_table *t, uint32_t e)
{
    uint32_t i = (uint32_t)key_hash(t, entry_key(t, e)) & t->mask;
    while (t->index[i] != EMPTY)
        i = (i + 1) & t->mask;
    t->index[i] = e;
    t->nkeys++;
}

/* linear probing deletion by backward shift: no tombstones, lookups stay short */
static void index_del(pks_table *t, uint32_t e)
{
    uint32_t i = (uint32_t)key_hash(t, entry_key(t, e)) & t->mask;
    while (t->index[i] != e)
        i = (i + 1) & t->mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        uint32_t f = t->index[j];
        if (f == EMPTY)
            break;
        uint32_t home = (uint32_t)key_hash(t, entry_key(t, f)) & t->mask;
        /* f may fill the hole at i unless its home lies cyclically in (i, j] */
        if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
            t->index[i] = f;
            i = j;
        }
    }
    t->index[i] = EMPTY;
    t->nkeys--;
}

pks_table *pks_table_new(uint32_t nslots, uint64_t seed)
{
    if (nslots == 0 || nslots > (1u << 30))
        return NULL;
    uint64_t cap = 1;
    while (cap < (uint64_t)nslots * 4)          /* 2 keys per flow, load factor <= 1/2 */
        cap <<= 1;
    pks_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->nslots = nslots;
    t->mask = (uint32_t)(cap - 1);
    t->seed = seed | 1;
    t->index = malloc(cap * sizeof *t->index);
    t->flows = calloc(nslots, sizeof *t->flows);
    if (!t->index || !t->flows) {
        pks_table_free(t);
        return NULL;
    }
    memset(t->index, 0xff, cap * sizeof *t->index);
    t->ho_head = t->ho_tail = PKS_NONE;
    t->max_half_open = nslots;
    return t;
}

int pks_table_set_transitions(pks_table *t, const uint8_t *grid, uint32_t len)
{
    if (len != sizeof t->trans)
        return -1;
    for (uint32_t i = 0; i < len; i++)
        if (grid[i] >= PKS_STATES)
            return -1;
    memcpy(t->trans, grid, len);
    t->has_trans = 1;
    return 0;
}

int pks_table_set_timeouts(pks_table *t, const double *timeouts, uint32_t n)
{
    if (n != PKS_STATES)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (!(timeouts[i] >= 0))
            return -1;
    memcpy(t->timeouts, timeouts, sizeof t->timeouts);
    return 0;
}

uint32_t pks_events_take(pks_table *t, pks_event *out, uint32_t max)
{
    uint32_t n = t->ev_count < max ? t->ev_count : max;
    for (uint32_t i = 0; i < n; i++)
        out[i] = t->events[(t->ev_head + i) % PKS_EVENTS];
    t->ev_head = (t->ev_head + n) % PKS_EVENTS;
    t->ev_count -= n;
    return n;
}

static void event_put(pks_table *t, uint32_t slot, uint8_t kind, uint8_t from, uint8_t to,
                      uint8_t dir, double now, double value)
{
    const pks_flow *f = &t->flows[slot];
    pks_event *e = &t->events[(t->ev_head + t->ev_count) % PKS_EVENTS];
    e->slot = slot;
    e->kind = kind;
    e->from = from;
    e->to = to;
    e->dir = dir;
    e->gen = f->gen;
    e->backend = f->backend;
    e->reason = f->reason;
    e->service = f->service;
    e->t = now;
    e->value = value;
    e->bytes[0] = f->bytes[0];
    e->bytes[1] = f->bytes[1];
    t->ev_count++;
}

void pks_table_free(pks_table *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->nsvc; i++) {
        free(t->svc[i].picks);
        free(t->svc[i].slots);
        free(t->svc[i].acl);
    }
    free(t->bk_ep);
    free(t->bk_load);
    free(t->index);
    free(t->flows);
    free(t->heap);
    free(t);
}

/* ------------------------------------------------------------------ timers */

static inline int timer_before(const pks_timer *a, const pks_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_up(pks_timer *h, uint32_t i)
{
    pks_timer e = h[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!timer_before(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static void heap_down(pks_timer *h, uint32_t n, uint32_t i)
{
    pks_timer e = h[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && timer_before(&h[c + 1], &h[c]))
            c++;
        if (!timer_before(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static int entry_live(const pks_table *t, const pks_timer *e)
{
    const pks_flow *f = &t->flows[e->slot];
    return f->used && f->timer_seq == e->seq;
}

/* Drops the stale entries once they outnumber the live ones: a flood of flows removed
 * before their timer comes due would otherwise keep their entries until each deadline. */
static void heap_compact(pks_table *t)
{
    if (t->stale <= COMPACT_MIN || t->stale <= t->heap_len / 2)
        return;
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->heap_len; i++)
        if (entry_live(t, &t->heap[i]))
            t->heap[n++] = t->heap[i];
    t->heap_len = n;
    for (uint32_t i = n / 2; i-- > 0;)
        heap_down(t->heap, n, i);
    t->stale = 0;
}

/* a new live entry for the flow at slot; its earlier one, if any, turns stale */
static int timer_push(pks_table *t, uint32_t slot, double due)
{
    if (t->heap_len == t->heap_cap) {
        heap_compact(t);
        if (t->heap_len == t->heap_cap) {
            uint32_t cap = t->heap_cap ? t->heap_cap * 2 : HEAP_FIRST;
            if (cap < t->heap_cap)
                return -3;
            pks_timer *h = realloc(t->heap, (size_t)cap * sizeof *h);
            if (!h)
                return -3;
            t->heap = h;
            t->heap_cap = cap;
        }
    }
    pks_flow *f = &t->flows[slot];
    if (f->timer_seq)
        t->stale++;
    if (++t->timer_seq == 0)
        t->timer_seq = 1;                       /* 0 means "no entry" */
    f->timer_seq = t->timer_seq;
    f->timer_due = due;
    pks_timer *e = &t->heap[t->heap_len++];
    e->due = due;
    e->slot = slot;
    e->seq = t->timer_seq;
    heap_up(t->heap, t->heap_len - 1);
    return 0;
}

double pks_next_due(const pks_table *t)
{
    return t->heap_len ? t->heap[0].due : -1.0;
}

uint32_t pks_expire(pks_table *t, double now, uint32_t *out, uint32_t max)
{
    uint32_t n = 0;
    while (n < max && t->heap_len && t->heap[0].due <= now) {
        pks_timer e = t->heap[0];
        t->heap[0] = t->heap[--t->heap_len];
        if (t->heap_len)
            heap_down(t->heap, t->heap_len, 0);
        if (!entry_live(t, &e)) {
            t->stale--;
            continue;                           /* removed, or given an earlier entry since */
        }
        pks_flow *f = &t->flows[e.slot];
        f->timer_seq = 0;                       /* this entry is gone */
        double expires = f->last_seen + f->timeout;
        if (expires > now) {                    /* traffic since: pushed back */
            if (timer_push(t, e.slot, expires) == 0)
                continue;
        }
        out[n++] = e.slot;                      /* (or no memory to push back: expire it) */
    }
    return n;
}

/* -------------------------------------------------------- flow membership */

static void ho_unlink(pks_table *t, uint32_t slot)
{
    pks_flow *f = &t->flows[slot];
    if (f->prev == PKS_NONE)
        t->ho_head = f->next;
    else
        t->flows[f->prev].next = f->next;
    if (f->next == PKS_NONE)
        t->ho_tail = f->prev;
    else
        t->flows[f->next].prev = f->prev;
    t->half_open--;
}

static void ho_append(pks_table *t, uint32_t slot)
{
    pks_flow *f = &t->flows[slot];
    f->prev = t->ho_tail;
    f->next = PKS_NONE;
    if (t->ho_tail == PKS_NONE)
        t->ho_head = slot;
    else
        t->flows[t->ho_tail].next = slot;
    t->ho_tail = slot;
    if (++t->half_open > t->half_open_peak)
        t->half_open_peak = t->half_open;
}

/* a flow of backend b leaves state `was` for `to` (PKS_S_NONE: not counted, before its
 * first state and once removed): its backend's load */
static void load_move(pks_table *t, uint32_t b, uint8_t was, uint8_t to)
{
    if (b >= t->bk_load_cap || was == to)
        return;
    pks_load *l = &t->bk_load[b];
    if (was == PKS_S_ESTABLISHED)
        l->active--;
    else if (was != PKS_S_NONE)
        l->inactive--;
    if (to == PKS_S_ESTABLISHED)
        l->active++;
    else if (to != PKS_S_NONE)
        l->inactive++;
}

/* the one way a flow's state changes, from Python (pks_flow_set_state) or from a packet */
static int flow_state(pks_table *t, uint32_t slot, uint8_t state, double now)
{
    pks_flow *f = &t->flows[slot];
    load_move(t, f->backend, f->state, state);
    if (f->state == PKS_S_SYN_RECV && state != PKS_S_SYN_RECV)
        ho_unlink(t, slot);
    else if (state == PKS_S_SYN_RECV && f->state != PKS_S_SYN_RECV)
        ho_append(t, slot);
    f->state = state;
    f->timeout = (float)t->timeouts[state];
    double due = now + f->timeout;
    /* a later deadline keeps the live entry: it comes due early and is pushed back */
    if (!f->timer_seq || due < f->timer_due)
        return timer_push(t, slot, due);
    return 0;
}

int pks_flow_set_state(pks_table *t, uint32_t slot, uint8_t state, double now)
{
    if (slot >= t->nslots || !t->flows[slot].used || state >= PKS_STATES)
        return -1;
    return flow_state(t, slot, state, now);
}

int pks_table_insert(pks_table *t, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    if (slot >= t->nslots || t->flows[slot].used)
        return -2;
    if (pks_table_lookup(t, k0) >= 0 || pks_table_lookup(t, k1) >= 0
        || memcmp(k0, k1, sizeof *k0) == 0)
        return -1;
    pks_flow *f = &t->flows[slot];
    uint32_t gen = f->gen;
    memset(f, 0, sizeof *f);
    f->gen = gen + 1;
    f->key[0] = *k0;
    f->key[1] = *k1;
    f->synack_at = -1.0;
    f->prev = f->next = PKS_NONE;
    f->used = 1;
    index_put(t, slot << 1);
    index_put(t, slot << 1 | 1);
    t->count++;
    return 0;
}

/* a key reversed: what a packet that is the answer to one with key k carries */
static void key_reverse(const pks_key *k, pks_nat *n)
{
    memcpy(n->saddr, k->daddr, sizeof n->saddr);
    memcpy(n->daddr, k->saddr, sizeof n->daddr);
    n->sport = k->dport;
    n->dport = k->sport;
}

void pks_flow_nat(const pks_table *t, uint32_t slot, uint8_t dir, pks_nat *out)
{
    key_reverse(&t->flows[slot].key[!dir], out);
}

static void put4(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

int pks_flow_open(pks_table *t, uint32_t slot, uint8_t *buf, pks_meta *m, uint32_t src,
                  uint16_t sport, uint32_t dst, uint16_t dport, double now)
{
    pks_key k1;                                 /* the answer to the rewritten packet */
    memset(&k1, 0, sizeof k1);
    k1.family = m->key.family;
    k1.proto = m->key.proto;
    put4(k1.saddr, dst);
    put4(k1.daddr, src);
    k1.sport = dport;
    k1.dport = sport;
    int rc = pks_table_insert(t, slot, &m->key, &k1);
    if (rc != 0)
        return rc;
    pks_flow *f = &t->flows[slot];
    f->pkts[0] = 1;
    f->bytes[0] = m->ip_len;
    f->last_seen = now;
    f->created = now;
    m->slot = (int32_t)slot;
    m->dir = 0;
    pks_nat n0;
    key_reverse(&k1, &n0);
    pks_rewrite(buf, m, &n0);
    return 0;
}

int pks_table_remove(pks_table *t, uint32_t slot)
{
    if (slot >= t->nslots || !t->flows[slot].used)
        return -1;
    pks_flow *f = &t->flows[slot];
    index_del(t, slot << 1);
    index_del(t, slot << 1 | 1);
    if (f->state == PKS_S_SYN_RECV)
        ho_unlink(t, slot);
    load_move(t, f->backend, f->state, PKS_S_NONE);
    if (f->timer_seq)
        t->stale++;
    uint32_t gen = f->gen;
    memset(f, 0, sizeof *f);
    f->gen = gen;
    t->count--;
    heap_compact(t);
    return 0;
}

uint32_t pks_table_scan(const pks_table *t, uint32_t from, uint32_t *out, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = from; i < t->nslots && n < max; i++)
        if (t->flows[i].used)
            out[n++] = i;
    return n;
}

/* ------------------------------------------------------------ new flows in C */

pks_snat *pks_snat_new(uint32_t naddrs, uint32_t lo, uint32_t hi)
{
    if (naddrs < 1 || lo < 1 || lo > hi || hi > 65535)
        return NULL;
    pks_snat *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->naddrs = naddrs;
    p->lo = lo;
    p->size = naddrs * (hi - lo + 1);
    p->in_use_by_addr = calloc(naddrs, sizeof *p->in_use_by_addr);
    if (!p->in_use_by_addr) {
        free(p);
        return NULL;
    }
    return p;
}

void pks_snat_free(pks_snat *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->nq; i++) {
        free(p->q[i].pairs);
        free(p->q[i].times);
    }
    free(p->q);
    free(p->in_use_by_addr);
    free(p);
}

/* Grows the array *arr of *cap elements of `size` bytes to hold index i (doubling), the new
 * elements filled with `fill` bytes: 0, -1 no memory (nothing changed) */
static int grow(void **arr, uint32_t *cap, uint32_t i, size_t size, int fill)
{
    if (i < *cap)
        return 0;
    uint32_t n = *cap ? *cap : 16;
    while (n <= i)
        n *= 2;                                 /* i < PKS_NUMBER_MAX: no overflow */
    uint8_t *a = realloc(*arr, n * size);
    if (!a)
        return -1;
    memset(a + (size_t)*cap * size, fill, (n - *cap) * size);
    *arr = a;
    *cap = n;
    return 0;
}

int pks_snat_add(pks_snat *p, uint32_t ep, uint32_t start)
{
    if (ep >= PKS_NUMBER_MAX || (ep < p->nq && p->q[ep].live))
        return -1;
    if (grow((void **)&p->q, &p->qcap, ep, sizeof *p->q, 0) != 0)
        return -1;
    if (ep >= p->nq)
        p->nq = ep + 1;
    pks_snatq *q = &p->q[ep];
    free(q->pairs);
    free(q->times);
    memset(q, 0, sizeof *q);
    q->start = start % p->size;
    q->live = 1;
    return 0;
}

int64_t pks_snat_alloc(pks_snat *p, uint32_t ep, double now)
{
    if (ep >= p->nq || !p->q[ep].live)
        return -1;
    pks_snatq *q = &p->q[ep];
    uint32_t n;
    if (q->fresh < p->size) {
        n = (uint32_t)(((uint64_t)q->start + q->fresh) % p->size);
        q->fresh++;
    } else if (q->count) {
        n = q->pairs[q->head];
        if (now - q->times[q->head] < PKS_TIME_WAIT)
            p->early_reuse++;
        q->head = (q->head + 1) % q->cap;
        q->count--;
    } else {
        p->exhausted++;
        return -1;
    }
    q->in_use++;
    p->in_use_total++;
    p->in_use_by_addr[n % p->naddrs]++;
    return n;
}

int pks_snat_release(pks_snat *p, uint32_t ep, uint32_t n, double now)
{
    if (ep >= p->nq || n >= p->size || p->q[ep].in_use == 0)
        return -1;
    pks_snatq *q = &p->q[ep];
    if (q->count == q->cap) {   /* grow: at most the pool's size, as every pair is in use */
        uint32_t cap = q->cap < PKS_RING_MIN ? PKS_RING_MIN : 2 * q->cap;
        if (cap > p->size)
            cap = p->size;
        uint32_t *pairs = malloc(cap * sizeof *pairs);
        double *times = malloc(cap * sizeof *times);
        if (!pairs || !times) {
            free(pairs);
            free(times);
            return -2;
        }
        for (uint32_t k = 0; k < q->count; k++) {
            pairs[k] = q->pairs[(q->head + k) % q->cap];
            times[k] = q->times[(q->head + k) % q->cap];
        }
        free(q->pairs);
        free(q->times);
        q->pairs = pairs;
        q->times = times;
        q->head = 0;
        q->cap = cap;
    }
    uint32_t i = (q->head + q->count) % q->cap;
    q->pairs[i] = n;
    q->times[i] = now;
    if (now > q->last_freed)
        q->last_freed = now;
    q->count++;
    q->in_use--;
    p->in_use_total--;
    p->in_use_by_addr[n % p->naddrs]--;
    return 0;
}

int pks_snat_drop(pks_snat *p, uint32_t ep, double now)
{
    if (ep >= p->nq || !p->q[ep].live || p->q[ep].in_use)
        return -1;
    pks_snatq *q = &p->q[ep];
    if (q->count && now - q->last_freed < PKS_TIME_WAIT)
        return -2;
    free(q->pairs);
    free(q->times);
    memset(q, 0, sizeof *q);
    return 0;
}

int pks_table_set_snat(pks_table *t, pks_snat *pool, const uint32_t *addrs, uint32_t n)
{
    if (pool && (n != pool->naddrs || n > PKS_SNAT_ADDRS))
        return -1;
    t->snat = pool;
    for (uint32_t i = 0; pool && i < n; i++)
        t->snat_addrs[i] = addrs[i];
    return 0;
}

static pks_service *service_of(pks_table *t, uint32_t id)
{
    for (uint32_t i = 0; i < t->nsvc; i++)
        if (t->svc[i].id == id)
            return &t->svc[i];
    return NULL;
}

int pks_service_set(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                    const pks_pick *picks, uint32_t n, uint32_t cursor)
{
    if (n > PKS_PERIOD_MAX || (n && cursor >= n))
        return -1;
    pks_service *s = service_of(t, id);
    if (!n) {                                   /* back to Python: drop the entry */
        if (s) {
            free(s->picks);
            free(s->slots);
            free(s->acl);
            *s = t->svc[--t->nsvc];
        }
        return 0;
    }
    pks_pick *copy = malloc(n * sizeof *copy);
    if (!copy)
        return -1;
    memcpy(copy, picks, n * sizeof *copy);
    if (!s) {
        if (t->nsvc == PKS_SERVICES) {
            free(copy);
            return -1;
        }
        s = &t->svc[t->nsvc++];
        s->picks = NULL;
        s->slots = NULL;
        s->acl = NULL;
        s->nallow = s->ndeny = 0;
    }
    free(s->picks);
    free(s->slots);
    s->vip = vip;
    s->port = port;
    s->id = id;
    s->len = n;
    s->cursor = cursor;
    s->picks = copy;
    s->slots = NULL;
    s->size = 0;
    s->least = 0;
    return 0;
}

int pks_service_hash(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                     const pks_pick *members, uint32_t n, const uint32_t *slots, uint32_t size,
                     int with_port)
{
    if (!n || n > PKS_PERIOD_MAX || !size || size > PKS_SLOTS_MAX)
        return -1;
    for (uint32_t i = 0; i < size; i++)
        if (slots[i] >= n && slots[i] != PKS_NONE)
            return -1;
    if (pks_service_set(t, id, vip, port, members, n, 0) != 0)
        return -1;
    pks_service *s = service_of(t, id);
    uint32_t *copy = malloc((size_t)size * sizeof *copy);
    if (!copy) {
        pks_service_set(t, id, 0, 0, NULL, 0, 0);
        return -1;
    }
    memcpy(copy, slots, (size_t)size * sizeof *copy);
    s->slots = copy;
    s->size = size;
    s->with_port = !!with_port;
    return 0;
}

int pks_service_least(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                      const pks_pick *members, uint32_t n, int how)
{
    if (!n || n > PKS_PERIOD_MAX || (how != PKS_LEAST_COUNT && how != PKS_LEAST_PER_WEIGHT))
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (members[i].backend >= t->bk_load_cap)
            return -1;
    if (pks_service_set(t, id, vip, port, members, n, 0) != 0)
        return -1;
    service_of(t, id)->least = (uint8_t)how;
    return 0;
}

int pks_service_acl(pks_table *t, uint32_t id, const uint32_t *prefixes, uint32_t nallow,
                    uint32_t ndeny)
{
    pks_service *s = service_of(t, id);
    if (!s || nallow > PKS_ACL_MAX || ndeny > PKS_ACL_MAX - nallow)
        return -1;
    uint32_t *copy = NULL;
    size_t n = (size_t)(nallow + ndeny) * 2;
    if (n) {
        if (!(copy = malloc(n * sizeof *copy)))
            return -1;
        memcpy(copy, prefixes, n * sizeof *copy);
    }
    free(s->acl);
    s->acl = copy;
    s->nallow = nallow;
    s->ndeny = ndeny;
    return 0;
}

static int acl_permits(const pks_service *s, uint32_t addr)
{
    const uint32_t *allow = s->acl, *deny = s->acl + 2 * s->nallow;
    for (uint32_t i = 0; i < s->ndeny; i++)
        if ((addr & deny[2 * i + 1]) == deny[2 * i])
            return 0;
    if (!s->nallow)
        return 1;
    for (uint32_t i = 0; i < s->nallow; i++)
        if ((addr & allow[2 * i + 1]) == allow[2 * i])
            return 1;
    return 0;
}


/* BLAKE2b, RFC 7693: only what a keyed hash of one short message needs */
static const uint64_t b2_iv[8] = {
    0x6a09e667f3bcc908ull, 0xbb67ae8584caa73bull, 0x3c6ef372fe94f82bull, 0xa54ff53a5f1d36f1ull,
    0x510e527fade682d1ull, 0x9b05688c2b3e6c1full, 0x1f83d9abfb41bd6bull, 0x5be0cd19137e2179ull};
static const uint8_t b2_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t rotr64(uint64_t x, int n) { return x >> n | x << (64 - n); }

#define B2_G(a, b, c, d, x, y)                                                          \
    do {                                                                                \
        v[a] = v[a] + v[b] + (x);                                                       \
        v[d] = rotr64(v[d] ^ v[a], 32);                                                 \
        v[c] = v[c] + v[d];                                                             \
        v[b] = rotr64(v[b] ^ v[c], 24);                                                 \
        v[a] = v[a] + v[b] + (y);                                                       \
        v[d] = rotr64(v[d] ^ v[a], 16);                                                 \
        v[c] = v[c] + v[d];                                                             \
        v[b] = rotr64(v[b] ^ v[c], 63);                                                 \
    } while (0)

static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t count, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++) {
        m[i] = 0;
        for (int k = 7; k >= 0; k--)
            m[i] = m[i] << 8 | block[8 * i + k];
    }
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = b2_iv[i];
    }
    v[12] ^= count;
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = b2_sigma[r];
        B2_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* the state after the key block of a keyed, 8-byte BLAKE2b (the block is the last one when
 * no data follows) */
static void b2_keyed(uint64_t h[8], const uint8_t *key, uint32_t keylen, int last)
{
    uint8_t block[128];
    if (keylen > PKS_HASH_KEY_MAX)
        keylen = PKS_HASH_KEY_MAX;
    memcpy(h, b2_iv, 8 * sizeof *h);
    h[0] ^= 0x01010000ull ^ (uint64_t)keylen << 8 ^ 8;     /* digest 8 bytes, keyed */
    memset(block, 0, sizeof block);
    memcpy(block, key, keylen);
    b2_compress(h, block, 128, last);
}

/* the hash from the state after the key block, of 1..128 bytes of data */
static uint64_t b2_finish(const uint64_t keyed[8], const uint8_t *data, uint32_t len)
{
    uint64_t h[8];
    uint8_t block[128];
    memcpy(h, keyed, sizeof h);
    memset(block, 0, sizeof block);
    memcpy(block, data, len);
    b2_compress(h, block, 128 + len, 1);
    return h[0];
}

uint64_t pks_hash64(const uint8_t *key, uint32_t keylen, const uint8_t *data, uint32_t len)
{
    uint64_t h[8];
    b2_keyed(h, key, keylen, len == 0);
    return len ? b2_finish(h, data, len > 128 ? 128 : len) : h[0];
}

int pks_table_set_hash_key(pks_table *t, const uint8_t *key, uint32_t len)
{
    if (!len || len > PKS_HASH_KEY_MAX)
        return -1;
    b2_keyed(t->hash_state, key, len, 0);   /* once: every client hash starts from here */
    t->hash_key_len = len;
    return 0;
}

int64_t pks_service_next(pks_table *t, uint32_t id, int advance)
{
    pks_service *s = service_of(t, id);
    if (!s || s->slots || s->least)
        return -1;
    uint32_t at = s->cursor;
    if (advance)
        s->cursor = (at + 1) % s->len;
    return at;
}

/* The pair pks_snat_alloc would hand out toward ep now, or -1 (no queue, or none free) */
static int64_t snat_next(const pks_snat *p, uint32_t ep)
{
    if (ep >= p->nq || !p->q[ep].live)
        return -1;
    const pks_snatq *q = &p->q[ep];
    if (q->fresh < p->size)
        return (int64_t)(((uint64_t)q->start + q->fresh) % p->size);
    return q->count ? (int64_t)q->pairs[q->head] : -1;
}

/* A least-loaded service's member for a new flow (pks.h, pks_load), the flow `gone` (or
 * PKS_NONE), whose port the SYN reuses, ended first as Python ends it before it picks; NULL
 * when no member has a weight above 0 */
static const pks_pick *least_pick(const pks_table *t, const pks_service *s, uint32_t gone)
{
    const pks_flow *g = gone != PKS_NONE ? &t->flows[gone] : NULL;
    const pks_pick *best = NULL;
    uint64_t least = 0;
    for (uint32_t i = 0; i < s->len; i++) {
        const pks_pick *p = &s->picks[i];
        if (!p->weight)
            continue;
        const pks_load *l = &t->bk_load[p->backend];   /* checked by pks_service_least */
        uint64_t active = l->active, inactive = l->inactive;
        if (g && g->backend == p->backend) {
            if (g->state == PKS_S_ESTABLISHED)
                active--;
            else if (g->state != PKS_S_NONE)
                inactive--;
        }
        uint64_t load = active * PKS_ACTIVE_WEIGHT + inactive;
        if (!best || (s->least == PKS_LEAST_COUNT ? load < least
                                                   : load * best->weight < least * p->weight)) {
            best = p;
            least = load;
        }
    }
    return best;
}

/* A client's SYN without a flow (old = PKS_NONE), or reusing the port of flow `old` in
 * TIME_WAIT or CLOSE: open its flow in C when everything it needs is at hand (pks.h, "New
 * flows in C"); else PKS_V_SLOW, with nothing changed. Everything that can refuse is checked
 * before anything changes; only running out of memory for the timer, at the very end, leaves
 * a flow it ended ended (m->slot = -1: Python then decides as for an unknown key). */
static int native_open(pks_table *t, uint8_t *buf, pks_meta *m, double now, uint32_t old)
{
    if (!t->open_on || !t->has_trans || m->key.family != 4
        || (m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST | PKS_TCP_FIN))
               != PKS_TCP_SYN)
        return PKS_V_SLOW;
    pks_service *s = NULL;
    for (uint32_t i = 0; i < t->nsvc; i++)
        if (t->svc[i].vip == m->daddr4 && t->svc[i].port == m->dport) {
            s = &t->svc[i];
            break;
        }
    if (!s || !s->len || PKS_EVENTS - t->ev_count < PKS_EV_OPEN_ROOM)
        return PKS_V_SLOW;
    if (s->acl && !acl_permits(s, m->saddr4))
        return PKS_V_SLOW;                      /* refused: Python drops and counts it */
    uint32_t evict = PKS_NONE;                  /* the oldest half-open flow, to make room */
    if (t->count >= t->nslots || t->half_open >= t->max_half_open) {
        /* as Python's path: once the SYN is sure to be taken; one eviction must do (a
         * lowered limit, a full table of established flows or a reused port: Python's) */
        if (old != PKS_NONE || t->ho_head == PKS_NONE || t->count > t->nslots
            || t->half_open > t->max_half_open)
            return PKS_V_SLOW;
        evict = t->ho_head;
    }
    /* the slot: a lent one, or with every slot in use the evicted flow's */
    uint32_t slot;
    if (t->nspare)
        slot = t->spare[t->nspare - 1];
    else if (evict != PKS_NONE && t->count >= t->nslots)
        slot = evict;
    else
        return PKS_V_SLOW;                      /* Python lends slots, or finds none */
    if (slot >= t->nslots || (t->flows[slot].used && slot != evict))
        return PKS_V_SLOW;                      /* not a free slot: Python's to sort out */
    const pks_pick *pick = &s->picks[s->cursor];
    uint32_t hslot = PKS_NONE;                  /* hashed: the client's slot */
    if (s->slots) {
        if (!t->hash_key_len)
            return PKS_V_SLOW;                  /* no key: Python's */
        uint8_t hk[6];
        put4(hk, m->saddr4);
        hk[4] = (uint8_t)(m->sport >> 8);
        hk[5] = (uint8_t)m->sport;
        hslot = (uint32_t)(b2_finish(t->hash_state, hk, s->with_port ? 6 : 4) % s->size);
        if (s->slots[hslot] == PKS_NONE)
            return PKS_V_SLOW;                  /* an empty slot: Python's to refuse */
        pick = &s->picks[s->slots[hslot]];
    } else if (s->least) {
        /* the reused port's flow ends before the pick, the evicted one after it, as in
         * Python (which evicts once the SYN is sure to be taken) */
        pick = least_pick(t, s, old);
        if (!pick)
            return PKS_V_SLOW;                  /* no backend takes flows: Python's to refuse */
    }
    uint32_t ep = PKS_NONE;                     /* the pick's queue in the SNAT pool */
    int64_t pair = -1;
    if (t->snat) {
        if (pick->backend >= t->bk_cap || (ep = t->bk_ep[pick->backend]) == PKS_NONE
            || (pair = snat_next(t->snat, ep)) < 0)
            return PKS_V_SLOW;
    }
    uint32_t gone = old != PKS_NONE ? old : evict;  /* the flow this SYN ends, if any */
    uint32_t evicted = old == PKS_NONE && evict != PKS_NONE ? t->flows[evict].backend : PKS_NONE;
    uint32_t gone_ep = PKS_NONE;
    if (gone != PKS_NONE && t->flows[gone].has_snat) {
        uint32_t b = t->flows[gone].backend;
        if (!t->snat || b >= t->bk_cap || t->bk_ep[b] == PKS_NONE)
            return PKS_V_SLOW;
        gone_ep = t->bk_ep[b];
    }
    /* the new flow's keys: dir 0 as the SYN came, dir 1 the answer to the rewritten SYN;
     * neither may belong to another flow than the one this SYN ends (a tuple collision is
     * Python's to count) */
    pks_key k1;
    memset(&k1, 0, sizeof k1);
    k1.family = 4;
    k1.proto = PKS_PROTO_TCP;
    put4(k1.saddr, pick->addr);
    k1.sport = pick->port;
    if (pair >= 0) {
        put4(k1.daddr, t->snat_addrs[pair % t->snat->naddrs]);
        k1.dport = (uint16_t)(t->snat->lo + pair / t->snat->naddrs);
    } else {
        put4(k1.daddr, m->saddr4);
        k1.dport = m->sport;
    }
    int64_t e0 = pks_table_lookup(t, &m->key), e1 = pks_table_lookup(t, &k1);
    if ((e0 >= 0 && (uint32_t)(e0 >> 1) != old) || (e1 >= 0 && (uint32_t)(e1 >> 1) != old)
        || memcmp(&m->key, &k1, sizeof k1) == 0)
        return PKS_V_SLOW;
    /* from here on nothing refuses */
    if (pair >= 0)          /* taken before the ended flow's pair goes back, as in Python */
        pair = pks_snat_alloc(t->snat, ep, now);    /* the pair snat_next named */
    /* (pks_snat_release below only fails when the ring cannot grow, out of memory: the pair
     * is then lost to the pool, and counted in use) */
    if (gone != PKS_NONE) { /* end it, as Python's reuse or eviction does */
        pks_flow *o = &t->flows[gone];
        /* dir 1: its slot is the new flow's (Python must not free it) */
        event_put(t, gone, old != PKS_NONE ? PKS_EV_END : PKS_EV_EVICT, o->state, o->state,
                  slot == gone, now, 0);
        if (o->has_snat)
            pks_snat_release(t->snat, gone_ep,
                             (uint32_t)(o->snat_port - t->snat->lo) * t->snat->naddrs
                                 + o->snat_addr, now);
        pks_table_remove(t, gone);
    }
    pks_table_insert(t, slot, &m->key, &k1);    /* checked above: cannot fail */
    if (slot != gone)
        t->nspare--;
    if (!s->slots && !s->least)
        s->cursor = (s->cursor + 1) % s->len;
    pks_flow *f = &t->flows[slot];
    f->pkts[0] = 1;
    f->bytes[0] = m->ip_len;
    f->last_seen = now;
    f->created = now;
    f->fast = 1;
    f->syns = 1;
    f->service = s->id;
    f->backend = pick->backend;
    f->reason = s->slots || s->least ? PKS_NONE : pick->reason; /* Python writes these */
    if (pair >= 0) {
        f->has_snat = 1;
        f->snat_addr = (uint16_t)(pair % t->snat->naddrs);
        f->snat_port = (uint16_t)(t->snat->lo + pair / t->snat->naddrs);
    }
    if (flow_state(t, slot, PKS_S_SYN_RECV, now) != 0) {    /* no memory for its timer */
        pks_table_remove(t, slot);
        if (pair >= 0)
            pks_snat_release(t->snat, ep, (uint32_t)pair, now);
        if (slot != gone)
            t->nspare++;
        else    /* the evicted flow's slot is free after all: the event just put says so */
            t->events[(t->ev_head + t->ev_count - 1) % PKS_EVENTS].dir = 0;
        if (!s->slots && !s->least)
            s->cursor = (s->cursor + s->len - 1) % s->len;
        m->slot = -1;
        return PKS_V_SLOW;
    }
    t->opened++;
    event_put(t, slot, PKS_EV_OPEN, 0, PKS_S_SYN_RECV, 0, now, (double)hslot);
    t->events[(t->ev_head + t->ev_count - 1) % PKS_EVENTS].bytes[1] = evicted;
    m->slot = (int32_t)slot;
    m->dir = 0;
    pks_nat n0;
    key_reverse(&k1, &n0);
    pks_rewrite(buf, m, &n0);
    return PKS_V_FAST;
}

int pks_table_set_backends(pks_table *t, uint32_t n)
{
    if (n > PKS_NUMBER_MAX)
        return -1;
    if (!n)
        return 0;
    return grow((void **)&t->bk_load, &t->bk_load_cap, n - 1, sizeof *t->bk_load, 0);
}

int pks_table_set_endpoint(pks_table *t, uint32_t backend, uint32_t ep)
{
    if (backend >= PKS_NUMBER_MAX
        || grow((void **)&t->bk_ep, &t->bk_cap, backend, sizeof *t->bk_ep, 0xff) != 0)
        return -1;
    t->bk_ep[backend] = ep;
    return 0;
}

/* --------------------------------------------------------------- per packet */

void pks_apply(pks_table *t, uint8_t *buf, const pks_meta *m)
{
    pks_nat n;
    pks_flow_nat(t, (uint32_t)m->slot, m->dir, &n);
    pks_rewrite(buf, m, &n);
}

int pks_process(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m, int vnet)
{
    if ((vnet ? pks_parse_vnet(buf, len, m) : pks_parse(buf, len, m)) != PKS_OK)
        return PKS_V_DROP;
    if (m->key.proto != PKS_PROTO_TCP)
        return PKS_V_SLOW;                      /* ICMP: Python's, with m->slot = -1 */
    int64_t e = pks_table_lookup(t, &m->key);
    if (e < 0)
        return native_open(t, buf, m, now, PKS_NONE);
    m->slot = (int32_t)(e >> 1);
    m->dir = (uint8_t)(e & 1);
    pks_flow *f = &t->flows[m->slot];
    if (m->dir == 0 && (f->state == PKS_S_TIME_WAIT || f->state == PKS_S_CLOSE)
        && (m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST | PKS_TCP_FIN))
               == PKS_TCP_SYN)
        /* the client's port, reused: the SYN is the new flow's, not counted on the old one.
         * C opens the new flow as Python's reuse path does, or leaves it to Python: m->slot
         * is still the old flow's then, or -1 (as for an unknown key) if C ended it. */
        return native_open(t, buf, m, now, (uint32_t)m->slot);
    f->pkts[m->dir]++;
    f->bytes[m->dir] += m->ip_len;
    f->last_seen = now;
    {   /* sequence space seen each way, in serial arithmetic (RFC 1982): for resets */
        const uint8_t *th = buf + m->hdr + m->l4_off;
        uint32_t seq = (uint32_t)rd16(th + 4) << 16 | rd16(th + 6);
        uint32_t end = seq + m->payload + !!(m->tcp_flags & PKS_TCP_SYN)
                       + !!(m->tcp_flags & PKS_TCP_FIN);
        if ((int32_t)(end - f->seq_end[m->dir]) > 0 || f->seq_end[m->dir] == 0)
            f->seq_end[m->dir] = end;
        if (m->tcp_flags & PKS_TCP_ACK) {
            uint32_t ack = (uint32_t)rd16(th + 8) << 16 | rd16(th + 10);
            if (!f->acked[m->dir] || (int32_t)(ack - f->ack[m->dir]) > 0)
                f->ack[m->dir] = ack;
            f->acked[m->dir] = 1;
        }
    }
    /* without a grid, FINs are Python's too (a table nobody loaded one into); with one, so
     * is every other SYN (a client's that opens a flow went to native_open) and RST, but the
     * backend's SYN-ACK */
    uint8_t flags = m->tcp_flags;
    uint8_t stop = PKS_TCP_SYN | PKS_TCP_RST | (t->has_trans ? 0 : PKS_TCP_FIN);
    int synack = t->has_trans && m->dir == 1
                 && (flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST)) == (PKS_TCP_SYN | PKS_TCP_ACK);
    if (!f->fast || ((flags & stop) && !synack))
        return PKS_V_SLOW;
    if (PKS_EVENTS - t->ev_count < 3)       /* no room to tell Python: it decides itself */
        return PKS_V_SLOW;
    if (t->has_trans && f->state < PKS_STATES) {    /* SYN > FIN > ACK, as tcpstate.event_of */
        int ev = (flags & PKS_TCP_SYN) ? 0 : (flags & PKS_TCP_FIN) ? 1
                 : (flags & PKS_TCP_ACK) ? 2 : -1;
        if (ev >= 0) {
            uint8_t to = t->trans[m->dir][ev][f->state];
            if (to != f->state) {
                if (t->all_events || f->state == PKS_S_ESTABLISHED || to == PKS_S_ESTABLISHED)
                    event_put(t, (uint32_t)m->slot, PKS_EV_STATE, f->state, to, m->dir, now, 0);
                flow_state(t, (uint32_t)m->slot, to, now);
            }
        }
    }
    if (synack && !f->synacked) {
        f->synacked = 1;
        if (f->synack_at < 0) {     /* the first SYN-ACK anyone saw: its time, the handshake
                                       time in value and the client's SYN count in `to` */
            f->synack_at = now;
            event_put(t, (uint32_t)m->slot, PKS_EV_SYNACK, f->state, f->syns, 1, now,
                      now - f->created);
        }
    }
    if (m->payload && !f->measured) {           /* first request -> first response */
        if (m->dir == 0) {
            if (f->req_at == 0)
                f->req_at = now;
        } else if (f->req_at != 0) {
            event_put(t, (uint32_t)m->slot, PKS_EV_RESPONSE, f->state, f->state, 1, now,
                      now - f->req_at);
            f->measured = 1;
        }
    }
    pks_apply(t, buf, m);
    return PKS_V_FAST;
}

/* --------------------------------------------------------------- drain loop */

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* the TUN device is empty: wait on the caller's epoll set until it is readable again (1),
 * or say why not (0, r->status set) */
static int drain_wait(pks_table *t, int fd, int epfd, double deadline, pks_drain_result *r)
{
    r->status = PKS_D_EMPTY;
    if (t->ev_count)
        return 0;
    struct epoll_event ev[8];
    for (;;) {
        double left = deadline - monotonic_now();
        if (left <= 0)
            return 0;
        if (left > PKS_WAIT_MAX)
            left = PKS_WAIT_MAX;                /* the loop comes back to wait again */
        int ms = (int)(left * 1000.0) + 1;      /* rounded up: no spinning on a last 0 ms */
        int n = epoll_wait(epfd, ev, 8, ms);
        if (n < 0) {
            if (errno != EINTR) {
                r->err = errno;
                r->status = PKS_D_ERROR;
                r->wait_failed = 1;
            }
            return 0;
        }
        if (n == 0)
            continue;                           /* the deadline is checked above */
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd != fd) {
                r->status = PKS_D_OTHER;
                return 0;
            }
        return 1;
    }
}

uint32_t pks_process_many(pks_table *t, const uint8_t *pkts, uint32_t size, uint32_t n,
                          uint8_t *buf, uint32_t cap, int vnet, pks_meta *m)
{
    if (size > cap)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(buf, pkts + (size_t)i * size, size);
        if (pks_process(t, buf, size, monotonic_now(), m, vnet) != PKS_V_FAST)
            return i;
    }
    return n;
}

void pks_drain(pks_table *t, int fd, uint8_t *buf, uint32_t cap, int vnet, uint32_t budget,
               pks_meta *m, int epfd, double wait, pks_drain_result *r)
{
    double deadline = wait > 0 ? monotonic_now() + wait : 0;
    r->forwarded = 0;
    r->write_errors = 0;
    r->wait_failed = 0;
    r->status = PKS_D_BUDGET;
    while (r->forwarded < budget) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait > 0 && drain_wait(t, fd, epfd, deadline, r))
                    continue;
                if (wait <= 0)
                    r->status = PKS_D_EMPTY;
                return;
            }
            r->err = errno;
            r->status = PKS_D_ERROR;
            return;
        }
        if ((uint32_t)n > r->largest)
            r->largest = (uint32_t)n;
        double now = monotonic_now();
        int v = pks_process(t, buf, (uint32_t)n, now, m, vnet);
        if (v != PKS_V_FAST) {
            r->status = PKS_D_PYTHON;
            r->len = (uint32_t)n;
            r->verdict = v;
            r->now = now;
            return;
        }
        if (write(fd, buf, (size_t)n) < 0) {
            r->write_errors++;
            r->err = errno;
        }
        r->forwarded++;
    }
}
