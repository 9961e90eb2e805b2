/* The flow table against a model: keys, lists, free slots, the program of operations. */
#include "fuzz.h"

/* ------------------------------------------------------------ table model */

/* a small universe of keys, so that operations collide and probe chains form */
void small_key(uint8_t b, pks_key *k)
{
    memset(k, 0, sizeof *k);
    k->family = 4;
    k->proto = 6;
    k->sport = (uint16_t)(40000 + (b & 15));
    k->dport = 80;
    k->saddr[0] = 198;
    k->saddr[3] = (uint8_t)(b >> 4);
    k->daddr[0] = 203;
    k->daddr[3] = 10;
}

void make_nat(const uint8_t *data, size_t size, uint32_t salt, pks_nat *n)
{
    uint8_t b[12];
    for (size_t i = 0; i < 12; i++)
        b[i] = (uint8_t)(data[i % size] ^ data[size - 1 - (i % size)] ^ (salt * 0x9d + i));
    memset(n, 0, sizeof *n);
    memcpy(n->saddr, b, 4);
    memcpy(n->daddr, b + 4, 4);
    n->sport = get16(b + 8);
    n->dport = get16(b + 10);
}

int64_t model_find(const model *md, const pks_key *k)
{
    for (uint32_t i = 0; i < NSLOTS; i++)
        for (uint32_t d = 0; d < 2; d++)
            if (md->s[i].used && memcmp(&md->s[i].key[d], k, sizeof *k) == 0)
                return (int64_t)(i << 1 | d);
    return -1;
}

void check_key(const model *md, const pks_key *k)
{
    CHECK(pks_table_lookup(md->t, k) == model_find(md, k));
}

/* the half-open list holds exactly the used SYN_RECV flows, linked both ways; every used
 * flow with a timer has exactly one live heap entry, the rest are counted stale; heap order */
void check_lists(const model *md)
{
    const pks_table *t = md->t;
    uint32_t syn_recv = 0, timers = 0, n = 0, prev = PKS_NONE;
    for (uint32_t i = 0; i < NSLOTS; i++) {
        const pks_flow *f = &t->flows[i];
        syn_recv += f->used && f->state == PKS_S_SYN_RECV;
        timers += f->used && f->timer_seq != 0;
        CHECK(f->used || f->timer_seq == 0);
    }
    for (uint32_t s = t->ho.head; s != PKS_NONE; s = t->flows[s].next) {
        CHECK(s < NSLOTS && n < NSLOTS);
        CHECK(t->flows[s].used && t->flows[s].state == PKS_S_SYN_RECV);
        CHECK(t->flows[s].prev == prev);
        prev = s;
        n++;
    }
    CHECK(t->ho.tail == prev && n == syn_recv && t->ho.count == syn_recv);
    uint32_t live = 0;
    for (uint32_t i = 0; i < t->heap_len; i++) {
        const pks_timer *e = &t->heap[i];
        CHECK(e->slot < NSLOTS);
        live += t->flows[e->slot].used && t->flows[e->slot].timer_seq == e->seq;
        if (i)
            CHECK(t->heap[(i - 1) / 2].due <= e->due);
    }
    CHECK(live == timers && t->stale == t->heap_len - live);
}

/* the free slots are the unused ones: each once in the list (below fresh), or fresh */
void check_free(const pks_table *t)
{
    uint8_t seen[NSLOTS] = {0};
    uint32_t listed = 0;
    for (uint32_t s = t->free_head; s != PKS_NONE; s = t->flows[s].next) {
        CHECK(s < t->fresh && !t->flows[s].used && !seen[s] && listed < NSLOTS);
        seen[s] = 1;
        listed++;
    }
    CHECK(t->fresh <= t->nslots && listed + (t->nslots - t->fresh) + t->count == t->nslots);
}

void check_table(const model *md, int full)
{
    uint32_t used = 0;
    for (uint32_t i = 0; i < NSLOTS; i++) {
        const model_slot *ms = &md->s[i];
        const pks_flow *f = &md->t->flows[i];
        CHECK(f->used == ms->used);
        if (!ms->used)
            continue;
        used++;
        for (uint32_t d = 0; d < 2; d++) {
            CHECK(pks_table_lookup(md->t, &ms->key[d]) == (int64_t)(i << 1 | d));
            if (full) {
                pks_nat n;
                pks_flow_nat(md->t, i, (uint8_t)d, &n);
                CHECK(memcmp(&f->key[d], &ms->key[d], sizeof f->key[d]) == 0);
                CHECK(memcmp(&n, &ms->nat[d], sizeof n) == 0);
            }
        }
    }
    CHECK(md->t->nkeys == 2 * used);
    check_free(md->t);
    check_lists(md);
    if (!full)
        return;
    /* the index holds exactly the keys of the used slots: so a key of no used slot (one never
     * inserted, or removed) cannot be found */
    uint32_t live = 0;
    for (uint32_t i = 0; i <= md->t->mask; i++) {
        uint32_t e = md->t->index[i];
        if (e == EMPTY_ENTRY)
            continue;
        live++;
        CHECK((e >> 1) < NSLOTS && md->s[e >> 1].used);
        const pks_key *k = &md->t->flows[e >> 1].key[e & 1];
        /* found from its home, so no empty cell lies between (the probing invariant) */
        CHECK(pks_table_lookup(md->t, k) == (int64_t)e);
    }
    CHECK(live == md->t->nkeys);
}

/* what pks_table_insert must return */
int insert_rc(const model *md, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    if (slot >= NSLOTS || md->s[slot].used)
        return -2;
    if (model_find(md, k0) >= 0 || model_find(md, k1) >= 0 || memcmp(k0, k1, sizeof *k0) == 0)
        return -1;
    return 0;
}

/* what a direction of a flow is rewritten to: the other direction's key, reversed */
void reverse_key(const pks_key *k, pks_nat *n)
{
    memset(n, 0, sizeof *n);
    memcpy(n->saddr, k->daddr, sizeof n->saddr);
    memcpy(n->daddr, k->saddr, sizeof n->daddr);
    n->sport = k->dport;
    n->dport = k->sport;
}

void model_insert(model *md, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    model_slot *ms = &md->s[slot];
    memset(ms, 0, sizeof *ms);
    ms->used = 1;
    ms->key[0] = *k0;
    ms->key[1] = *k1;
    reverse_key(k1, &ms->nat[0]);
    reverse_key(k0, &ms->nat[1]);
    ms->state = (uint8_t)(slot * 3 % PKS_STATES); /* any state, as Python sets it */
    CHECK(pks_flow_set_state(md->t, slot, ms->state, 1.0) == 0);
}

/* the grid a graded table runs on: not IPVS's, but one where every cell differs by input */
uint8_t grid_cell(uint32_t dir, uint32_t ev, uint32_t state)
{
    return (uint8_t)((state * 7 + ev * 3 + dir + 1) % PKS_STATES);
}

void load_grid(pks_table *t)
{
    uint8_t grid[2 * 4 * PKS_STATES];
    for (uint32_t d = 0; d < 2; d++)
        for (uint32_t e = 0; e < 4; e++)
            for (uint32_t s = 0; s < PKS_STATES; s++)
                grid[(d * 4 + e) * PKS_STATES + s] = grid_cell(d, e, s);
    CHECK(pks_table_set_transitions(t, grid, sizeof grid) == 0);
    CHECK(pks_table_set_transitions(t, grid, sizeof grid - 1) == -1);
}

void do_insert(model *md, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    int want = insert_rc(md, slot, k0, k1);
    CHECK(pks_table_insert(md->t, slot, k0, k1) == want);
    if (want == 0)
        model_insert(md, slot, k0, k1);
    check_key(md, k0);
    check_key(md, k1);
}

/* a flow for the packet (parsed into m) to `to`: packets like m's become `to`, the replies
 * to it the reverse of m's (the keys native_open inserts) */
void do_flow_for(model *md, uint32_t slot, const pks_meta *m, const pks_nat *to)
{
    pks_key k1;
    memset(&k1, 0, sizeof k1);
    k1.family = 4;
    k1.proto = 6;
    memcpy(k1.saddr, to->daddr, 4);
    memcpy(k1.daddr, to->saddr, 4);
    k1.sport = to->dport;
    k1.dport = to->sport;
    do_insert(md, slot, &m->key, &k1);
}

/* (c) a small table driven by the input, read backwards in 3-byte operations */
void drive_table(const uint8_t *data, size_t size, const pks_meta *m, int vnet)
{
    model md;
    memset(&md, 0, sizeof md);
    md.t = pks_table_new(NSLOTS, (uint64_t)size * 0x9e3779b97f4a7c15ull ^ data[0]);
    CHECK(md.t != NULL);
    if (data[size - 1] & 0x80) /* half the inputs: C moves flows' states itself */
        load_grid(md.t);
    if (data[size - 1] & 0x20)                /* and traces, in a buffer of 1 .. 4 records */
        trace_on(md.t, data[size / 2]);
    double timeouts[PKS_STATES];
    for (uint32_t s = 0; s < PKS_STATES; s++) /* 0 .. 2.5 s, from the input */
        timeouts[s] = (double)((data[s % size] >> 4) % 6) * 0.5;
    CHECK(pks_table_set_timeouts(md.t, timeouts, PKS_STATES) == 0);
    timeouts[0] = -1;
    CHECK(pks_table_set_timeouts(md.t, timeouts, PKS_STATES) == -1);
    timeouts[0] = md.t->timeouts[0];
    check_table(&md, 1);
    size_t nops = size / 3 < MAX_OPS ? size / 3 : MAX_OPS;
    for (size_t i = 0; i < nops; i++) {
        const uint8_t *op = data + size - 3 * (i + 1);
        uint8_t code = op[0] & 3, arg = op[0] >> 2, a = op[1], b = op[2];
        pks_key k0, k1;
        pks_key quoted;             /* an ICMP error's quoted TCP packet, reversed */
        int icmp_quote = m->err == PKS_OK && m->key.proto == PKS_PROTO_ICMP
                         && quote_key(data + m->hdr + m->l4_off + 8,
                                      m->ip_len - m->l4_off - 8, &quoted);
        if (code == 3 && (m->err != PKS_OK || (m->key.proto == PKS_PROTO_ICMP && !icmp_quote)))
            code = 0;
        switch (code) {
        case 0: /* insert two small keys; slots 8..15 are out of range */
            small_key(a, &k0);
            small_key(b, &k1);
            do_insert(&md, arg & 15, &k0, &k1);
            break;
        case 1: { /* remove */
            uint32_t slot = arg & 15;
            int want = slot < NSLOTS && md.s[slot].used ? 0 : -1;
            CHECK(pks_table_remove(md.t, slot) == want);
            if (want == 0) {
                model_slot gone = md.s[slot];
                memset(&md.s[slot], 0, sizeof md.s[slot]);
                CHECK(pks_table_lookup(md.t, &gone.key[0]) == -1);
                CHECK(pks_table_lookup(md.t, &gone.key[1]) == -1);
            }
            break;
        }
        case 2: /* lookups */
            small_key(a, &k0);
            check_key(&md, &k0);
            small_key(b, &k0);
            check_key(&md, &k0);
            if (m->err == PKS_OK)
                check_key(&md, &m->key);
            break;
        case 3: { /* a flow holding the packet's key: opened by it, or inserted in direction a & 1;
                   * for an ICMP error, a flow its quote is about */
            if (icmp_quote) {
                small_key(b, &k1);
                if (a & 1)
                    do_insert(&md, arg & 7, &k1, &quoted);
                else
                    do_insert(&md, arg & 7, &quoted, &k1);
                break;
            }
            pks_nat to;
            make_nat(data, size, (uint32_t)(2 * i + 1), &to);
            small_key(b, &k1);
            if (a & 4)
                do_flow_for(&md, arg & 7, m, &to);
            else if (a & 1)
                do_insert(&md, arg & 7, &k1, &m->key);
            else
                do_insert(&md, arg & 7, &m->key, &k1);
            break;
        }
        }
        check_table(&md, i % 8 == 7);
    }
    check_table(&md, 1);
    run_process(&md, data, size, m, vnet);
    check_table(&md, 1);
    /* expiry at rising times: a flow is returned exactly when it has been idle for its
     * timeout (earlier entries of flows seen since are pushed back), and once */
    uint32_t timed = 0;
    for (uint32_t i = 0; i < NSLOTS; i++)
        timed += md.t->flows[i].used && md.t->flows[i].timer_seq != 0;
    uint32_t gone = 0;
    for (double now = 0.5; now < 8; now += 0.5) {
        uint32_t due[NSLOTS + 1];
        uint32_t n = pks_expire(md.t, now, due, NSLOTS + 1);
        for (uint32_t i = 0; i < n; i++) {
            pks_flow *f = &md.t->flows[due[i]];
            CHECK(f->used && f->timer_seq == 0 && f->last_seen + f->timeout <= now);
            CHECK(pks_table_remove(md.t, due[i]) == 0);
            memset(&md.s[due[i]], 0, sizeof md.s[due[i]]);
        }
        gone += n;
        for (uint32_t i = 0; i < NSLOTS; i++) /* the rest have a timer, not yet due */
            if (md.t->flows[i].used)
                CHECK(md.t->flows[i].timer_seq && md.t->flows[i].timer_due > now);
        check_table(&md, 1);
    }
    CHECK(gone == timed && md.t->heap_len == 0 && md.t->stale == 0);
    pks_table_free(md.t);
}
