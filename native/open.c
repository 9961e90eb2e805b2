/* Opening a new flow for a client's SYN: pick, SNAT pair, room, insert, rewrite. */
#include "pks_internal.h"

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
int native_open(pks_table *t, uint8_t *buf, pks_meta *m, double now, uint32_t old)
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
