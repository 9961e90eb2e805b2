/* The flow table: its index (open addressing), its life, its settings and the event ring. */
#include "pks_internal.h"

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

void index_put(pks_table *t, uint32_t e)
{
    uint32_t i = (uint32_t)key_hash(t, entry_key(t, e)) & t->mask;
    while (t->index[i] != EMPTY)
        i = (i + 1) & t->mask;
    t->index[i] = e;
    t->nkeys++;
}

/* linear probing deletion by backward shift: no tombstones, lookups stay short */
void index_del(pks_table *t, uint32_t e)
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
    t->free_head = PKS_NONE;                    /* every slot fresh */
    t->fresh = 0;
    t->echo_at = -1e18;                         /* the echo bucket full from the start */
    t->cookies_from = PKS_NONE;                 /* no SYN cookies until Python sets them */
    t->cookie_last = -1e18;
    memset(t->index, 0xff, cap * sizeof *t->index);
    t->ho.head = t->ho.tail = t->closing.head = t->closing.tail = PKS_NONE;
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

/* the event at ring position `at` (taken already) about the flow in `slot` as it is now */
void event_write(pks_table *t, uint32_t at, uint32_t slot, uint8_t kind, uint8_t from,
                 uint8_t to, uint8_t dir, double now, double value)
{
    const pks_flow *f = &t->flows[slot];
    pks_event *e = &t->events[at];
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
    e->data.bytes[0] = f->bytes[0];
    e->data.bytes[1] = f->bytes[1];
}

void event_put(pks_table *t, uint32_t slot, uint8_t kind, uint8_t from, uint8_t to,
               uint8_t dir, double now, double value)
{
    event_write(t, (t->ev_head + t->ev_count++) % PKS_EVENTS, slot, kind, from, to, dir, now,
                value);
}

void pks_table_free(pks_table *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->nsvc; i++) {
        free(t->svc[i].picks);
        free(t->svc[i].state);
        free(t->svc[i].slots);
        free(t->svc[i].acl);
    }
    if (t->clients)
        free(t->clients->slots);
    free(t->clients);
    free(t->bk_ep);
    free(t->bk_load);
    free(t->index);
    free(t->flows);
    free(t->heap);
    free(t);
}

int pks_table_set_backends(pks_table *t, uint32_t n)
{
    if (n > PKS_NUMBER_MAX)
        return -1;
    if (!n)
        return 0;
    uint32_t had = t->bk_load_cap;
    if (grow((void **)&t->bk_load, &t->bk_load_cap, n - 1, sizeof *t->bk_load, 0) != 0)
        return -1;
    for (uint32_t b = had; b < t->bk_load_cap; b++)
        t->bk_load[b].rt = -1;                  /* not measured */
    return 0;
}

int pks_table_set_endpoint(pks_table *t, uint32_t backend, uint32_t ep)
{
    if (backend >= PKS_NUMBER_MAX
        || grow((void **)&t->bk_ep, &t->bk_cap, backend, sizeof *t->bk_ep, 0xff) != 0)
        return -1;
    t->bk_ep[backend] = ep;
    return 0;
}
