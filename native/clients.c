/* Per-client limits (pks_clients.h): the client table, a SYN's check against its service's
 * limits, and each counted flow's entry. */
#include "pks_internal.h"

static inline uint32_t prefix_mask(uint32_t bits) { return bits ? ~0u << (32 - bits) : 0; }

/* where the entry of (addr, svc_bits) starts looking: seeded, as the flow index is, so that
 * no client can aim a run of addresses at one place */
static uint32_t home(const pks_table *t, uint32_t addr, uint32_t svc_bits)
{
    uint64_t h = t->seed ^ ((uint64_t)svc_bits << 32 | addr);
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)h & t->clients->mask;
}

/* the entry's index, or PKS_NONE (the table is never full: a probe ends at an empty one) */
static uint32_t find(const pks_table *t, uint32_t addr, uint32_t svc_bits)
{
    const pks_clients *c = t->clients;
    for (uint32_t i = home(t, addr, svc_bits);; i = (i + 1) & c->mask) {
        const pks_client *e = &c->slots[i];
        if (e->svc_bits == PKS_NONE)
            return PKS_NONE;
        if (e->svc_bits == svc_bits && e->addr == addr)
            return i;
    }
}

/* deletes entry i by backward shift (as index_del: no tombstones) */
static void delete(pks_table *t, uint32_t i)
{
    pks_clients *c = t->clients;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & c->mask;
        const pks_client *f = &c->slots[j];
        if (f->svc_bits == PKS_NONE)
            break;
        uint32_t h = home(t, f->addr, f->svc_bits);
        if (((j - h) & c->mask) >= ((j - i) & c->mask)) {
            c->slots[i] = *f;
            i = j;
        }
    }
    c->slots[i].svc_bits = PKS_NONE;
    c->count--;
}

uint32_t pks_clients_sweep(pks_table *t, double now, uint32_t max)
{
    pks_clients *c = t->clients;
    uint32_t gone = 0;
    for (uint32_t k = 0; c && k < max && c->count; k++) {
        const pks_client *e = &c->slots[c->cursor];
        if (e->svc_bits != PKS_NONE && !e->flows && e->tat <= now) {
            delete(t, c->cursor);               /* another may move in: looked at next */
            gone++;
        } else {
            c->cursor = (c->cursor + 1) & c->mask;
        }
    }
    return gone;
}

static int make_table(pks_table *t)
{
    uint64_t cap = PKS_CLIENTS_MIN;
    while (cap < 2 * (uint64_t)t->nslots)
        cap <<= 1;
    pks_clients *c = calloc(1, sizeof *c);
    pks_client *slots = malloc(cap * sizeof *slots);
    if (!c || !slots) {
        free(c);
        free(slots);
        return -1;
    }
    for (uint64_t i = 0; i < cap; i++)
        slots[i].svc_bits = PKS_NONE;
    c->mask = (uint32_t)(cap - 1);
    c->limit = (uint32_t)(cap / 4 * 3);
    c->slots = slots;
    t->clients = c;
    return 0;
}

int pks_service_limits(pks_table *t, uint32_t id, uint32_t bits, uint32_t max_flows,
                       double rate, double burst)
{
    pks_service *s = service_of(t, id);
    if (!s || bits > 32 || id >= (1u << 26) || !(rate >= 0 && rate <= 1e9)
        || !(burst >= 1 && burst <= 1e9))
        return -1;
    if (bits && !t->clients && make_table(t) != 0)
        return -1;
    s->lim_bits = bits;
    s->lim_flows = bits ? max_flows : 0;
    s->lim_gap = bits && rate > 0 ? 1.0 / rate : 0.0;
    s->lim_ahead = (burst - 1.0) * s->lim_gap;
    return 0;
}

int client_check(pks_table *t, const pks_service *s, uint32_t addr, double now)
{
    pks_clients *c = t->clients;
    uint32_t i = find(t, addr & prefix_mask(s->lim_bits), s->id << 6 | s->lim_bits);
    if (i == PKS_NONE) {                        /* a new client: room for its entry */
        if (c->count >= c->limit)
            pks_clients_sweep(t, now, PKS_CLIENTS_SWEEP);
        return c->count >= c->limit ? PKS_E_CLIENTS_FULL : 0;
    }
    const pks_client *e = &c->slots[i];
    if (s->lim_flows && e->flows >= s->lim_flows)
        return PKS_E_CLIENT_FLOWS;
    if (s->lim_gap && e->tat - now > s->lim_ahead)
        return PKS_E_CLIENT_RATE;
    return 0;
}

/* the entry of (addr, svc_bits), found, or made (no flow, tat) where its probe ends: the
 * caller made sure of room */
static uint32_t find_or_add(pks_table *t, uint32_t addr, uint32_t svc_bits, double tat)
{
    pks_clients *c = t->clients;
    uint32_t i = home(t, addr, svc_bits);
    for (; c->slots[i].svc_bits != PKS_NONE; i = (i + 1) & c->mask)
        if (c->slots[i].svc_bits == svc_bits && c->slots[i].addr == addr)
            return i;
    c->slots[i] = (pks_client){.addr = addr, .svc_bits = svc_bits, .flows = 0, .tat = tat};
    c->count++;
    return i;
}

void client_open(pks_table *t, const pks_service *s, uint32_t slot, double now)
{
    pks_flow *f = &t->flows[slot];
    uint32_t addr = rd32(f->key[0].saddr) & prefix_mask(s->lim_bits);
    /* (client_check made sure of room) */
    pks_client *e = &t->clients->slots[find_or_add(t, addr, s->id << 6 | s->lim_bits, now)];
    e->flows++;
    if (s->lim_gap)
        e->tat = (e->tat > now ? e->tat : now) + s->lim_gap;
    f->client_bits = (uint8_t)s->lim_bits;
}

void client_count(pks_table *t, const pks_flow *f, int counts)
{
    pks_clients *c = t->clients;
    uint32_t bits = f->client_bits;
    uint32_t addr = rd32(f->key[0].saddr) & prefix_mask(bits), svc_bits = f->service << 6 | bits;
    if (!counts) {
        uint32_t i = find(t, addr, svc_bits);
        if (i != PKS_NONE && c->slots[i].flows)
            c->slots[i].flows--;
        return;
    }
    if (c->count >= c->limit && find(t, addr, svc_bits) == PKS_NONE)
        return;                     /* swept while the flow was closing, and no room: uncounted */
    c->slots[find_or_add(t, addr, svc_bits, 0)].flows++;
}
