/* A flow's membership: insert, open, state moves (timeout, half-open list, backend load),
 * remove. */
#include "pks_internal.h"

/* the list a flow in `state` belongs to: the half-open flows, the closing ones, or none */
static pks_list *list_of(pks_table *t, uint8_t state)
{
    if (state == PKS_S_SYN_RECV)
        return &t->ho;
    return state == PKS_S_TIME_WAIT || state == PKS_S_CLOSE ? &t->closing : NULL;
}

static void list_unlink(pks_table *t, pks_list *l, uint32_t slot)
{
    pks_flow *f = &t->flows[slot];
    if (f->prev == PKS_NONE)
        l->head = f->next;
    else
        t->flows[f->prev].next = f->next;
    if (f->next == PKS_NONE)
        l->tail = f->prev;
    else
        t->flows[f->next].prev = f->prev;
    l->count--;
}

static void list_append(pks_table *t, pks_list *l, uint32_t slot)
{
    pks_flow *f = &t->flows[slot];
    f->prev = l->tail;
    f->next = PKS_NONE;
    if (l->tail == PKS_NONE)
        l->head = slot;
    else
        t->flows[l->tail].next = slot;
    l->tail = slot;
    l->count++;
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
int flow_state(pks_table *t, uint32_t slot, uint8_t state, double now)
{
    return flow_state_for(t, slot, state, t->timeouts[state], now);
}

/* the flow into `state` with its own timeout (a UDP flow's: its service's udp_timeout) */
int flow_state_for(pks_table *t, uint32_t slot, uint8_t state, double timeout, double now)
{
    pks_flow *f = &t->flows[slot];
    load_move(t, f->backend, f->state, state);
    pks_list *was = list_of(t, f->state), *to = list_of(t, state);
    if (f->client_bits && (was == &t->closing) != (to == &t->closing))
        client_count(t, f, to != &t->closing);  /* a finished flow is no client's any more */
    if (was != to) {
        if (was)
            list_unlink(t, was, slot);
        if (to)
            list_append(t, to, slot);
        if (t->ho.count > t->half_open_peak)
            t->half_open_peak = t->ho.count;
    }
    f->state = state;
    f->timeout = (float)timeout;
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

/* slot, free, leaves the free slots: fresh ones before it join the list */
static void take_free(pks_table *t, uint32_t slot)
{
    if (slot >= t->fresh) {
        for (uint32_t i = t->fresh; i < slot; i++) {
            t->flows[i].next = t->free_head;
            t->free_head = i;
        }
        t->fresh = slot + 1;
        return;
    }
    uint32_t *link = &t->free_head;             /* (the first one at once: C takes it) */
    while (*link != slot)
        link = &t->flows[*link].next;
    *link = t->flows[slot].next;
}

uint32_t free_slot(const pks_table *t)
{
    return t->free_head != PKS_NONE ? t->free_head : t->fresh;
}

int pks_table_insert(pks_table *t, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    return flow_insert(t, slot, k0, k1, 0);
}

int flow_insert(pks_table *t, uint32_t slot, const pks_key *k0, const pks_key *k1,
                int one_packet)
{
    if (slot >= t->nslots || t->flows[slot].used)
        return -2;
    if ((!one_packet && pks_table_lookup(t, k0) >= 0) || pks_table_lookup(t, k1) >= 0
        || memcmp(k0, k1, sizeof *k0) == 0)
        return -1;
    take_free(t, slot);
    pks_flow *f = &t->flows[slot];
    uint32_t gen = f->gen;
    memset(f, 0, sizeof *f);
    f->gen = gen + 1;
    f->key[0] = *k0;
    f->key[1] = *k1;
    f->synack_at = -1.0;
    f->prev = f->next = PKS_NONE;
    f->used = 1;
    f->one_packet = (uint8_t)!!one_packet;
    if (!one_packet)
        index_put(t, slot << 1);
    index_put(t, slot << 1 | 1);
    t->count++;
    return 0;
}

/* a key reversed: what a packet that is the answer to one with key k carries */
void key_reverse(const pks_key *k, pks_nat *n)
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

void put4(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

void flow_count(pks_table *t, pks_flow *f, const pks_meta *m, double now)
{
    f->pkts[m->dir]++;
    f->bytes[m->dir] += m->ip_len;
    if (f->backend < t->bk_load_cap)
        t->bk_load[f->backend].bytes[m->dir] += m->ip_len;
    f->last_seen = now;
}

uint32_t pair_of(const pks_table *t, const pks_flow *g)
{
    return (uint32_t)(g->snat_port - t->snat->lo) * t->snat->naddrs + g->snat_addr;
}

void give_back(pks_table *t, const pks_flow *g)
{
    pks_snat_release(t->snat, t->bk_ep[g->backend], pair_of(t, g), g->last_seen);
}

int pks_table_remove(pks_table *t, uint32_t slot)
{
    if (slot >= t->nslots || !t->flows[slot].used)
        return -1;
    pks_flow *f = &t->flows[slot];
    if (!f->one_packet)                         /* (a one-packet flow's dir 0 is not indexed) */
        index_del(t, slot << 1);
    index_del(t, slot << 1 | 1);
    pks_list *l = list_of(t, f->state);
    if (l)
        list_unlink(t, l, slot);
    load_move(t, f->backend, f->state, PKS_S_NONE);
    if (f->client_bits && l != &t->closing)
        client_count(t, f, 0);
    if (f->timer_seq)
        t->stale++;
    uint32_t gen = f->gen;
    memset(f, 0, sizeof *f);
    f->gen = gen;
    t->count--;
    f->next = t->free_head;                     /* first in the free list */
    t->free_head = slot;
    heap_compact(t);
    return 0;
}

uint32_t pks_table_scan(const pks_table *t, uint32_t from, uint32_t *out, uint32_t span)
{
    uint32_t n = 0, end = from < t->nslots && t->nslots - from > span ? from + span : t->nslots;
    for (uint32_t i = from; i < end; i++)
        if (t->flows[i].used)
            out[n++] = i;
    return n;
}
