/* Each program's pick held to a model of it: lc, wlc and lrt, the hashed slot, rr, wrr. */
#include "fuzz.h"

/* The events one SYN C opened a flow for wrote, from ring position `from` on: the END of
 * the flow whose port it reused (if any), its OPEN, then the EVICT of each flow it ended to
 * make room; the OPEN's position is returned. */
uint32_t check_open_events(const opens *o, uint32_t from, uint32_t slot)
{
    const pks_table *t = o->t;
    uint32_t n = t->ev_count - from, at = 0;
    CHECK(n >= 1);
    const pks_event *first = &t->events[(t->ev_head + from) % PKS_EVENTS];
    if (first->kind == PKS_EV_END)
        at = 1;
    CHECK(at < n);
    const pks_event *open = &t->events[(t->ev_head + from + at) % PKS_EVENTS];
    CHECK(open->kind == PKS_EV_OPEN && open->slot == slot);
    for (uint32_t i = at + 1; i < n; i++) {
        /* the flow whose SNAT pair the new one took, first: toward the same backend
         * endpoint, finished or else half-open (none finished toward it is left) */
        const pks_event *e = &t->events[(t->ev_head + from + i) % PKS_EVENTS];
        if (e->kind == PKS_EV_RECLAIM) {
            CHECK(i == at + 1 && t->snat);
            uint32_t ep = t->bk_ep[e->backend];
            CHECK(ep == t->bk_ep[t->flows[slot].backend]);
            CHECK(e->from == PKS_S_TIME_WAIT || e->from == PKS_S_CLOSE
                  || e->from == PKS_S_SYN_RECV);
            for (uint32_t s = t->closing.head; e->from == PKS_S_SYN_RECV && s != PKS_NONE;
                 s = t->flows[s].next)
                CHECK(t->bk_ep[t->flows[s].backend] != ep);
        } else {
            CHECK(e->kind == PKS_EV_EVICT);
        }
    }
    return from + at;
}

/* member p's load is below q's: lc's, per weight for wlc, lrt's score (pks_service.h) */
static int model_less(const opens *o, const uint64_t *load, uint32_t p, uint32_t q)
{
    const pks_pick *mp = &o->picks[p], *mq = &o->picks[q];
    uint64_t lp = load[mp->backend], lq = load[mq->backend];
    if (o->prog == PKS_PROG_LRT) {
        double rp = o->t->bk_load[mp->backend].rt, rq = o->t->bk_load[mq->backend].rt;
        double sp = rp < 0 ? 0.0 : rp * (double)(lp + PKS_ACTIVE_WEIGHT) / (double)mp->weight;
        double sq = rq < 0 ? 0.0 : rq * (double)(lq + PKS_ACTIVE_WEIGHT) / (double)mq->weight;
        return sp < sq;
    }
    return o->prog == PKS_PROG_LC ? lp < lq : lp * mq->weight < lq * mp->weight;
}

/* lc, wlc, lrt: no member with a weight had less load than the one C gave the new flow in
 * `slot` (its load counted without that flow, and with the half-open flows it evicted,
 * whose EVICTs follow its OPEN: C picks before it evicts; the flow whose port it reused is
 * gone already, as C picks after it), nor as little and listed before it */
void check_least(const opens *o, uint32_t slot, uint32_t from)
{
    const pks_table *t = o->t;
    const pks_flow *f = &t->flows[slot];
    uint32_t act[4] = {0}, other[4] = {0};      /* each backend's flows at the pick */
    for (uint32_t i = 0; i < NSLOTS; i++) {
        const pks_flow *g = &t->flows[i];
        if (i != slot && g->used && g->state != PKS_S_NONE)
            (g->state == PKS_S_ESTABLISHED ? act : other)[g->backend]++;
    }
    uint32_t at = check_open_events(o, from, slot);
    for (uint32_t i = at + 1; i < t->ev_count; i++)
        other[t->events[(t->ev_head + i) % PKS_EVENTS].backend]++;  /* evicted, half-open */
    uint64_t load[4];
    for (uint32_t b = 0; b < 4; b++)
        load[b] = (uint64_t)act[b] * PKS_ACTIVE_WEIGHT + other[b];
    uint32_t chosen = o->n;
    for (uint32_t k = 0; k < o->n && chosen == o->n; k++)
        if (o->picks[k].weight && o->picks[k].backend == f->backend)
            chosen = k;
    CHECK(chosen < o->n && f->reason == PKS_NONE);
    const pks_pick *c = &o->picks[chosen];
    /* member p's load is above q's, or equal and p listed after q */
#define AFTER(p, q) (model_less(o, load, q, p) || (!model_less(o, load, p, q) && (p) > (q)))
    for (uint32_t k = 0; k < o->n; k++)
        if (o->picks[k].weight && o->picks[k].backend != c->backend)
            CHECK(AFTER(k, chosen));
    /* the OPEN event: the runner-up, least loaded after the chosen, and both one's counts */
    const pks_event *e = &t->events[(t->ev_head + at) % PKS_EVENTS];
    CHECK(e->data.least.active[0] == act[c->backend]);
    CHECK(e->data.least.inactive[0] == other[c->backend]);
    int lrt = o->prog == PKS_PROG_LRT;  /* and for lrt both one's response times */
    CHECK(e->data.least.rt[0] == (lrt ? t->bk_load[c->backend].rt : 0));
    uint32_t up = 0;
    for (uint32_t k = 0; k < o->n; k++)
        up += o->picks[k].weight != 0;
    if (up == 1) {
        CHECK(e->value == (double)PKS_NONE);
        return;
    }
    uint32_t r = (uint32_t)e->value;
    CHECK(e->value == (double)r && r < o->n && r != chosen && o->picks[r].weight);
    CHECK(e->data.least.active[1] == act[o->picks[r].backend]);
    CHECK(e->data.least.inactive[1] == other[o->picks[r].backend]);
    CHECK(e->data.least.rt[1] == (lrt ? t->bk_load[o->picks[r].backend].rt : 0));
    for (uint32_t k = 0; k < o->n; k++)
        if (o->picks[k].weight && k != chosen && k != r)
            CHECK(AFTER(k, r));
#undef AFTER
}

/* a hashed service: the member the client's slot names, and the slot (C's, from scratch) */
void check_hashed(const opens *o, const pks_flow *f, uint32_t slot_, uint32_t from)
{
    uint8_t hk[6];
    const pks_key *k = &f->key[0];
    memcpy(hk, k->saddr, 4);
    hk[4] = (uint8_t)(k->sport >> 8);
    hk[5] = (uint8_t)k->sport;
    uint64_t h = pks_hash64(HKEY, sizeof HKEY - 1, hk, o->with_port ? 6 : 4);
    uint32_t slot = (uint32_t)(h % o->size);
    CHECK(o->slots[slot] != PKS_NONE);
    CHECK(f->backend == o->picks[o->slots[slot]].backend && f->reason == PKS_NONE);
    uint32_t at = check_open_events(o, from, slot_);
    const pks_event *e = &o->t->events[(o->t->ev_head + at) % PKS_EVENTS];
    CHECK(e->kind == PKS_EV_OPEN && e->value == (double)slot);
}

/* rr, wrr: the member the program's state (the model's) names for the next flow, its OPEN
 * event's value, and the state after it; -1: no member has a weight. */
int64_t model_pick(const opens *o, int64_t *state, double *value)
{
    uint32_t n = o->n, up = 0;
    for (uint32_t k = 0; k < n; k++)
        up += o->picks[k].weight != 0;
    if (!up)
        return -1;
    if (o->prog == PKS_PROG_RR) {
        for (uint32_t i = 0;; i++) {
            uint32_t j = (uint32_t)(((uint64_t)state[0] + i) % n);
            if (o->picks[j].weight) {
                state[0] = (j + 1) % n;
                *value = j;
                return j;
            }
        }
    }
    /* wrr */
    int64_t total = 0;
    uint32_t best = n;
    for (uint32_t k = 0; k < n; k++) {
        if (!o->picks[k].weight)
            continue;
        state[k] += o->picks[k].weight;
        total += o->picks[k].weight;
        if (best == n || state[k] > state[best])
            best = k;
    }
    *value = (double)state[best];
    state[best] -= total;
    return best;
}
