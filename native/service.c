/* Service programs written by Python: periods, hash tables, least-loaded member lists,
 * access lists. */
#include "pks_internal.h"

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

/* The entry of service id, found or appended (zeroed), with its old program freed and the
 * new one's head written; NULL when the table is full. The access list stays. */
static pks_service *service_program(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                                    pks_pick *picks, uint32_t n, int prog)
{
    pks_service *s = service_of(t, id);
    if (!s) {
        if (t->nsvc == PKS_SERVICES)
            return NULL;
        s = &t->svc[t->nsvc++];
        memset(s, 0, sizeof *s);
    }
    free(s->picks);
    free(s->slots);
    s->vip = vip;
    s->port = port;
    s->id = id;
    s->picks = picks;
    s->len = n;
    s->cursor = s->size = 0;
    s->slots = NULL;
    s->taken = 0;
    s->least = 0;
    s->prog = (uint8_t)prog;
    return s;
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
    if (!(s = service_program(t, id, vip, port, copy, n, PKS_PROG_PERIOD))) {
        free(copy);
        return -1;
    }
    s->cursor = cursor;
    return 0;
}

int pks_service_prog(pks_table *t, uint32_t id, uint32_t vip, uint16_t port, int prog)
{
    if (prog != PKS_PROG_PYTHON && prog != PKS_PROG_EMPTY)
        return -1;
    return service_program(t, id, vip, port, NULL, 0, prog) ? 0 : -1;
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
    s->prog = PKS_PROG_HASH;
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
    pks_service *s = service_of(t, id);
    s->least = (uint8_t)how;
    s->prog = PKS_PROG_LEAST;
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

int acl_permits(const pks_service *s, uint32_t addr)
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

int64_t pks_service_next(pks_table *t, uint32_t id, int advance)
{
    pks_service *s = service_of(t, id);
    if (!s || s->prog != PKS_PROG_PERIOD)
        return -1;
    uint32_t at = s->cursor;
    if (advance) {
        s->cursor = (at + 1) % s->len;
        s->taken++;
    }
    return at;
}

int64_t pks_service_taken(pks_table *t, uint32_t id)
{
    pks_service *s = service_of(t, id);
    return s && s->prog == PKS_PROG_PERIOD ? (int64_t)s->taken : -1;
}

/* The pair pks_snat_alloc would hand out toward ep now, or -1 (no queue, or none free) */
