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

/* The flows a reclaim looks at in each list before it gives up (a backend's are rarely far
 * down: the lists are oldest first, and a pool runs short toward the busiest backend) */
#define RECLAIM_LOOK 64

/* Every SNAT pair toward endpoint ep is in use: the flow to take one from, the oldest that
 * has finished (TIME_WAIT, CLOSE: the backend forgets it first) toward ep, else the oldest
 * half-open one (a SYN flood's), among the first RECLAIM_LOOK of each list; PKS_NONE: none */
static uint32_t reclaim_from(const pks_table *t, uint32_t ep)
{
    const pks_list *lists[2] = {&t->closing, &t->ho};
    for (int l = 0; l < 2; l++) {
        uint32_t s = lists[l]->head;
        for (uint32_t k = 0; k < RECLAIM_LOOK && s != PKS_NONE; k++, s = t->flows[s].next) {
            const pks_flow *f = &t->flows[s];
            if (f->has_snat && f->backend < t->bk_cap && t->bk_ep[f->backend] == ep)
                return s;
        }
    }
    return PKS_NONE;
}

/* flow g holds no SNAT pair, or one toward an endpoint C knows */
static int pair_known(const pks_table *t, const pks_flow *g)
{
    return !g->has_snat || (t->snat && g->backend < t->bk_cap && t->bk_ep[g->backend] != PKS_NONE);
}

/* A pick not taken yet: the member, what the OPEN event says of it, and the program's
 * state once the flow is open (rr's index) */
typedef struct {
    uint32_t member;
    double value;
    pks_event_data data;
    uint64_t next;
} choice;

/* lrt's score of a member: its response time times its overhead with the new flow, per
 * weight (unmeasured: 0, so it is tried) */
static double lrt_score(const pks_table *t, const pks_pick *p, uint64_t load)
{
    double rt = t->bk_load[p->backend].rt;
    return rt < 0 ? 0.0 : rt * (double)(load + PKS_ACTIVE_WEIGHT) / (double)p->weight;
}

/* load p (on member p) is less than load q (on q), as lc, wlc or lrt compares them */
static int less_loaded(const pks_table *t, const pks_service *s, uint64_t p,
                       const pks_pick *mp, uint64_t q, const pks_pick *mq)
{
    if (s->prog == PKS_PROG_LRT)
        return lrt_score(t, mp, p) < lrt_score(t, mq, q);
    return s->prog == PKS_PROG_LC ? p < q : p * mq->weight < q * mp->weight;
}

/* lc's, wlc's or lrt's member for a new flow (pks_service.h, pks_load) into c, the flow
 * `gone` (or PKS_NONE), whose port the SYN reuses, counted as ended; -1 when no member has
 * a weight. What the OPEN event tells (c): the runner-up (the least loaded after it, ties
 * to the first listed, PKS_NONE without one), both members' counts at the pick, and for lrt
 * their response times. */
static int least_pick(const pks_table *t, const pks_service *s, uint32_t gone, choice *c)
{
    const pks_flow *g = gone != PKS_NONE ? &t->flows[gone] : NULL;
    uint32_t best = PKS_NONE, next = PKS_NONE;
    uint64_t least = 0, then = 0;
    memset(&c->data, 0, sizeof c->data);
    for (uint32_t i = 0; i < s->len; i++) {
        const pks_pick *p = &s->picks[i];
        if (!p->weight)
            continue;
        const pks_load *l = &t->bk_load[p->backend];   /* checked by pks_service_run */
        uint32_t active = l->active, inactive = l->inactive;
        if (g && g->backend == p->backend) {
            if (g->state == PKS_S_ESTABLISHED)
                active--;
            else if (g->state != PKS_S_NONE)
                inactive--;
        }
        uint64_t load = (uint64_t)active * PKS_ACTIVE_WEIGHT + inactive;
        /* k: the place i takes, 0 the best, 1 the runner-up (the best moves down) */
        int k = best == PKS_NONE || less_loaded(t, s, load, p, least, &s->picks[best]) ? 0
                : next == PKS_NONE || less_loaded(t, s, load, p, then, &s->picks[next]) ? 1
                : -1;
        if (k == 0) {
            next = best;
            then = least;
            c->data.least.active[1] = c->data.least.active[0];
            c->data.least.inactive[1] = c->data.least.inactive[0];
            c->data.least.rt[1] = c->data.least.rt[0];
            best = i;
            least = load;
        } else if (k == 1) {
            next = i;
            then = load;
        }
        if (k >= 0) {
            c->data.least.active[k] = active;
            c->data.least.inactive[k] = inactive;
            c->data.least.rt[k] = s->prog == PKS_PROG_LRT ? l->rt : 0;
        }
    }
    c->member = best;
    c->value = next;
    return best == PKS_NONE ? -1 : 0;
}

/* A SYN's source may be a client: not one of the switch's own addresses (a VIP, an SNAT
 * address), nor loopback, "this network" (0/8), multicast, reserved (240/4) or broadcast,
 * none of which a client's packet carries (RFC 1122 3.2.1.3, RFC 1812 5.3.7) */
static int source_ok(const pks_table *t, uint32_t src)
{
    uint8_t top = (uint8_t)(src >> 24);
    if (top == 0 || top == 127 || top >= 224)
        return 0;
    for (uint32_t i = 0; i < t->nsvc; i++)
        if (t->svc[i].vip == src)
            return 0;
    for (uint32_t i = 0; t->snat && i < t->snat->naddrs; i++)
        if (t->snat_addrs[i] == src)
            return 0;
    return 1;
}

/* The SYN's TCP checksum (or the first datagram's UDP one), over the pseudo-header and the
 * segment, verifies: a packet the backend would drop must not open a flow (nor count
 * against the backend as unanswered). A UDP checksum of 0 over IPv4 is none: it passes. */
static int l4_csum_ok(const uint8_t *buf, const pks_meta *m)
{
    const uint8_t *ip = buf + m->hdr;
    int udp = m->key.proto == PKS_PROTO_UDP;
    if (udp && m->l4_csum == 0)
        return 1;
    uint32_t l4len = udp ? 8u + m->payload : (uint32_t)m->ip_len - m->l4_off;
    uint32_t sum = rd16(ip + 12) + rd16(ip + 14) + rd16(ip + 16) + rd16(ip + 18)
                   + m->key.proto + l4len;
    return pks_csum(ip + m->l4_off, l4len, sum) == 0;
}

/* rr, wrr: the member for a new flow (the program's state is moved on by take());
 * -1 when no member has a weight */
static int choose(const pks_service *s, choice *c)
{
    memset(&c->data, 0, sizeof c->data);
    if (s->prog == PKS_PROG_RR) {
        for (uint32_t i = 0; i < s->len; i++) {
            uint32_t j = (uint32_t)(((uint64_t)s->state[0] + i) % s->len);
            if (s->picks[j].weight) {
                c->member = j;
                c->value = j;
                c->next = (j + 1) % s->len;
                return 0;
            }
        }
        return -1;
    }
    /* wrr */
    int64_t total = 0, best_current = 0;
    int64_t best = -1;
    for (uint32_t i = 0; i < s->len; i++) {
        int64_t w = s->picks[i].weight;
        if (!w)
            continue;
        total += w;
        if (best < 0 || s->state[i] + w > best_current) {
            best = i;
            best_current = s->state[i] + w;
        }
    }
    if (best < 0)
        return -1;
    c->member = (uint32_t)best;
    c->value = (double)best_current;
    c->data.total = total;
    return 0;
}

/* the flow is open: the program's state moves on past the pick */
static void take(pks_service *s, const choice *c)
{
    if (s->prog == PKS_PROG_RR) {
        s->state[0] = (int64_t)c->next;
    } else if (s->prog == PKS_PROG_WRR) {
        for (uint32_t i = 0; i < s->len; i++)
            s->state[i] += s->picks[i].weight;
        s->state[c->member] -= c->data.total;
    }
}

/* The datagram of a one-packet service's client went to the backend its pick names, whose
 * flow for that client socket still awaits an answer: the flow takes it too (one more to
 * answer) */
static int one_packet_again(pks_table *t, pks_service *s, const choice *c, uint8_t *buf,
                            pks_meta *m, uint32_t slot, double now)
{
    take(s, c);
    m->slot = (int32_t)slot;
    m->dir = 0;
    flow_count(t, &t->flows[slot], m, now);
    pks_apply(t, buf, m);
    return PKS_V_FAST;
}

/* A client's SYN without a flow (old = PKS_NONE), or reusing the port of flow `old` in
 * TIME_WAIT or CLOSE, or the ACK of a SYN cookie (cookie.c), or a UDP datagram of no flow
 * (to a UDP service: its flow in state UDP, with the service's udp_timeout; a one-packet
 * service's flow is keyed by its answer only, so that the client's next datagram is picked
 * for again): open its flow (pks_service.h, "New flows in C"), or under a SYN flood answer
 * the SYN with a cookie, or drop it with the reason (PKS_V_DROP), checked in this order:
 * not a SYN (nor a cookie's ACK: no_flow, or bad_cookie while cookies are out), a source
 * no client has, a wrong TCP checksum, no service, the access list, the client's limits
 * (clients.c), a full table, no backend, no SNAT pair (none free, and no flow toward the
 * backend to take one from: reclaim_from), a tuple in use; or leave it to Python with the
 * reason (PKS_V_SLOW) when the switch is not set up for it (no state grid, no hash key, a
 * backend's SNAT queue not written, no room for events or timers). Everything that can refuse is checked before anything changes. */
int native_open(pks_table *t, uint8_t *buf, pks_meta *m, double now, uint32_t old)
{
    int tcp = m->key.proto == PKS_PROTO_TCP;    /* else UDP: any datagram opens a flow */
    if (tcp && !t->has_trans)
        return slow_exit(t, m, PKS_SLOW_NO_GRID);
    if (m->key.family != 4)
        return slow_exit(t, m, PKS_SLOW_FAMILY);
    uint8_t fl = m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST | PKS_TCP_FIN);
    uint32_t isn = 0, cookie = 0;
    int mss = -1;               /* a SYN cookie's ACK (cookie.c): the MSS index the cookie holds */
    if (tcp && fl != PKS_TCP_SYN) {    /* a mid-connection packet of no known flow, or a cookie's ACK */
        if (fl != PKS_TCP_ACK || old != PKS_NONE
            || (mss = cookie_valid(t, buf, m, now, &isn)) == -2)
            return drop_exit(m, PKS_E_NO_FLOW);
        if (mss < 0)
            return drop_exit(m, PKS_E_BAD_COOKIE);
        cookie = rd32(buf + m->hdr + m->l4_off + 8) - 1;
    }
    if (!source_ok(t, m->saddr4))
        return drop_exit(m, PKS_E_BAD_SOURCE);
    if (!m->partial && !l4_csum_ok(buf, m))     /* (a partial sum is the host's own packet) */
        return drop_exit(m, tcp ? PKS_E_TCP_CHECKSUM : PKS_E_UDP_CHECKSUM);
    pks_service *s = NULL;
    for (uint32_t i = 0; i < t->nsvc; i++)
        if (t->svc[i].vip == m->daddr4 && t->svc[i].port == m->dport
            && t->svc[i].proto == m->key.proto) {
            s = &t->svc[i];
            break;
        }
    if (!s)
        return drop_exit(m, PKS_E_NO_SERVICE);
    if (s->acl && !acl_permits(s, m->saddr4))
        return drop_exit(m, PKS_E_ACL);
    if (s->lim_bits) {
        int why = client_check(t, s, m->saddr4, now);
        if (why)
            return drop_exit(m, why);
    }
    if (tcp && mss < 0 && old == PKS_NONE && pks_cookies_active(t))
        return cookie_answer(t, buf, m, now);   /* under a flood: no flow until the ACK */
    /* the room: the flow this SYN ends (its port's) first, then as many of the oldest
     * half-open flows as the table and its half-open share need (a lowered limit may need
     * several) */
    uint32_t count = t->count - (old != PKS_NONE);
    if (count >= t->nslots && !t->ho.count)
        return drop_exit(m, PKS_E_TABLE_FULL);  /* every place is an established flow's */
    uint32_t evict = 0;
    if (count >= t->nslots)
        evict = count - t->nslots + 1;
    if (tcp && t->ho.count >= t->max_half_open && t->ho.count - t->max_half_open + 1 > evict)
        evict = t->ho.count - t->max_half_open + 1;    /* (a UDP flow is not half-open) */
    if (evict > t->ho.count)
        return drop_exit(m, PKS_E_TABLE_FULL);
    if (PKS_EVENTS - t->ev_count < (uint64_t)evict + PKS_EV_OPEN_ROOM)
        return slow_exit(t, m, PKS_SLOW_EVENTS);
    if (s->prog == PKS_PROG_EMPTY)
        return drop_exit(m, PKS_E_NO_BACKEND);
    choice c = {.member = 0, .value = 0};
    const pks_pick *pick;
    if (s->prog == PKS_PROG_HASH) {
        if (!t->hash_key_len)
            return slow_exit(t, m, PKS_SLOW_NO_KEY);
        uint8_t hk[6];
        put4(hk, m->saddr4);
        hk[4] = (uint8_t)(m->sport >> 8);
        hk[5] = (uint8_t)m->sport;
        uint32_t hslot = (uint32_t)(b2_finish(t->hash_state, hk, s->with_port ? 6 : 4) % s->size);
        if (s->slots[hslot] == PKS_NONE)
            return drop_exit(m, PKS_E_NO_BACKEND);
        pick = &s->picks[s->slots[hslot]];
        c.value = hslot;
    } else {
        /* (lc, wlc, lrt: the reused port's flow ends before the pick, the evicted ones
         * after) */
        int least = s->prog == PKS_PROG_LC || s->prog == PKS_PROG_WLC || s->prog == PKS_PROG_LRT;
        if ((least ? least_pick(t, s, old, &c) : choose(s, &c)) != 0)
            return drop_exit(m, PKS_E_NO_BACKEND);
        pick = &s->picks[c.member];
    }
    uint32_t ep = PKS_NONE;                     /* the pick's queue in the SNAT pool */
    int64_t pair = -1;
    uint32_t victim = PKS_NONE;                 /* the flow whose pair the new one takes */
    if (t->snat) {
        if (pick->backend >= t->bk_cap || (ep = t->bk_ep[pick->backend]) == PKS_NONE)
            return slow_exit(t, m, PKS_SLOW_NO_ENDPOINT);
        if ((pair = snat_next(t->snat, ep)) < 0) {
            if ((victim = reclaim_from(t, ep)) == PKS_NONE) {
                t->snat->exhausted++;
                return drop_exit(m, PKS_E_SNAT);
            }
            pair = pair_of(t, &t->flows[victim]);
            /* a half-open victim is room made too: the evictions it spares */
            if (victim != old) {
                uint32_t c2 = count - 1;
                uint32_t h2 = t->ho.count - (t->flows[victim].state == PKS_S_SYN_RECV);
                evict = c2 >= t->nslots ? c2 - t->nslots + 1 : 0;
                if (tcp && h2 >= t->max_half_open && h2 - t->max_half_open + 1 > evict)
                    evict = h2 - t->max_half_open + 1;
            }
        }
    }
    /* every flow this SYN ends must give its SNAT pair back to a queue C knows: the reused
     * port's, then the evicted ones (the oldest half-open flows, the victim aside) */
    if (old != PKS_NONE && !pair_known(t, &t->flows[old]))
        return slow_exit(t, m, PKS_SLOW_NO_ENDPOINT);
    for (uint32_t i = 0, e = t->ho.head; i < evict; e = t->flows[e].next) {
        if (e == victim)
            continue;
        if (!pair_known(t, &t->flows[e]))
            return slow_exit(t, m, PKS_SLOW_NO_ENDPOINT);
        i++;
    }
    /* the new flow's keys: dir 0 as the SYN came, dir 1 the answer to the rewritten SYN;
     * neither may belong to another flow than those this SYN ends */
    pks_key k1;
    memset(&k1, 0, sizeof k1);
    k1.family = 4;
    k1.proto = m->key.proto;
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
    if (s->one_packet && e1 >= 0 && t->flows[e1 >> 1].one_packet
        && memcmp(&t->flows[e1 >> 1].key[0], &m->key, sizeof m->key) == 0)
        return one_packet_again(t, s, &c, buf, m, (uint32_t)(e1 >> 1), now);
    if ((e0 >= 0 && (uint32_t)(e0 >> 1) != old)
        || (e1 >= 0 && (uint32_t)(e1 >> 1) != old && (uint32_t)(e1 >> 1) != victim)
        || memcmp(&m->key, &k1, sizeof k1) == 0)
        return drop_exit(m, PKS_E_TUPLE);
    if (timer_room(t) != 0)                     /* the new flow's timer cannot fail below */
        return slow_exit(t, m, PKS_SLOW_NO_MEMORY);
    /* from here on nothing refuses */
    if (mss >= 0)           /* the cookie's ACK: the backend's SYN, from the client's ISN */
        cookie_to_syn(buf, m, isn, mss);
    if (victim != PKS_NONE)             /* the pool's only free pair: the victim's */
        give_back(t, &t->flows[victim]);
    if (pair >= 0)          /* taken before the ended flows' pairs go back, as in Python */
        pair = pks_snat_alloc(t->snat, ep, now);    /* the pair snat_next or reclaim named */
    /* Events, in the order Python applies them: the reused port's flow's END, the new flow's
     * OPEN (its reason is written from the counts at the pick, before the evictions), then
     * each EVICT. (pks_snat_release only fails when a ring cannot grow, out of memory: the
     * pair is then lost to the pool, and counted in use.) */
    if (old != PKS_NONE) {
        pks_flow *o = &t->flows[old];
        event_put(t, old, PKS_EV_END, o->state, o->state, 0, now, 0);
        if (o->has_snat && victim != old)
            give_back(t, o);
        pks_table_remove(t, old);
    }
    uint32_t open_at = (t->ev_head + t->ev_count++) % PKS_EVENTS;   /* OPEN's place */
    if (victim != PKS_NONE && victim != old) {
        pks_flow *o = &t->flows[victim];
        event_put(t, victim, PKS_EV_RECLAIM, o->state, o->state, 0, now, 0);
        pks_table_remove(t, victim);
    }
    for (uint32_t i = 0; i < evict; i++) {
        uint32_t v = t->ho.head;
        pks_flow *o = &t->flows[v];
        event_put(t, v, PKS_EV_EVICT, o->state, o->state, 0, now, 0);
        if (o->has_snat)
            give_back(t, o);
        pks_table_remove(t, v);
    }
    uint32_t slot = free_slot(t);               /* there is room: the count is below
                                                       nslots after the evictions */
    flow_insert(t, slot, &m->key, &k1, s->one_packet);  /* checked above: cannot fail */
    take(s, &c);
    pks_flow *f = &t->flows[slot];
    f->pkts[0] = 1;
    f->bytes[0] = m->ip_len;
    f->last_seen = now;
    f->created = now;
    if (m->payload)         /* a UDP request: its answer is the response lrt measures */
        f->req_at = now;
    if (tcp) {  /* the client's sequence space starts here (the SYN takes one number): what
                 * an ICMP error about the SYN quotes */
        const uint8_t *th = buf + m->hdr + m->l4_off;
        f->syns = 1;
        f->seq_end[0] = rd32(th + 4) + 1 + m->payload;
        window_syn(f, 0, th, (uint32_t)(th[12] >> 4) * 4);
    }
    f->service = s->id;
    f->backend = pick->backend;
    f->reason = pick->reason;   /* PKS_NONE: Python writes it, applying the OPEN event */
    if (pair >= 0) {
        f->has_snat = 1;
        f->snat_addr = (uint16_t)(pair % t->snat->naddrs);
        f->snat_port = (uint16_t)(t->snat->lo + pair / t->snat->naddrs);
    }
    uint8_t state = tcp ? PKS_S_SYN_RECV : PKS_S_UDP;
    flow_state_for(t, slot, state, tcp ? t->timeouts[state] : s->udp_timeout, now);
                                                /* its timer has room (timer_room) */
    if (s->lim_bits)
        client_open(t, s, slot, now);
    if (mss >= 0) {
        f->cookie = PKS_CK_SYN_SENT;
        f->seq_delta = cookie;                  /* until the backend's SYN-ACK gives its own */
        t->cookie_opens++;
    }
    t->bk_load[pick->backend].total++;
    t->bk_load[pick->backend].bytes[0] += m->ip_len;
    t->opened++;
    event_write(t, open_at, slot, PKS_EV_OPEN, 0, state, 0, now, c.value);
    t->events[open_at].data = c.data;
    m->slot = (int32_t)slot;
    m->dir = 0;
    pks_nat n0;
    key_reverse(&k1, &n0);
    pks_rewrite(buf, m, &n0);
    return PKS_V_FAST;
}
