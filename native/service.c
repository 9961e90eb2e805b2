/* Service programs written by Python (a scheduler's members and state, hash tables), access
 * lists, backends' response times. */
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

pks_service *service_of(pks_table *t, uint32_t id)
{
    for (uint32_t i = 0; i < t->nsvc; i++)
        if (t->svc[i].id == id)
            return &t->svc[i];
    return NULL;
}

/* The entry of service id, found or appended (zeroed), with its old program freed and the
 * new one's written; NULL when the table is full. The access list stays. */
static pks_service *service_program(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                                    int prog, pks_pick *picks, uint32_t n, int64_t *state,
                                    uint32_t nstate)
{
    pks_service *s = service_of(t, id);
    if (!s) {
        if (t->nsvc == PKS_SERVICES)
            return NULL;
        s = &t->svc[t->nsvc++];
        memset(s, 0, sizeof *s);
        s->proto = PKS_PROTO_TCP;
    }
    free(s->picks);
    free(s->state);
    free(s->slots);
    s->vip = vip;
    s->port = port;
    s->id = id;
    s->prog = (uint8_t)prog;
    s->picks = picks;
    s->len = n;
    s->state = state;
    s->nstate = nstate;
    s->slots = NULL;
    s->size = 0;
    s->with_port = 0;
    return s;
}

/* the state values program `prog` keeps for n members, or -1 for no such program */
static int64_t state_len(int prog, uint32_t n)
{
    switch (prog) {
    case PKS_PROG_RR: return PKS_STATE_RR;
    case PKS_PROG_WRR: return n;
    case PKS_PROG_LC: case PKS_PROG_WLC: case PKS_PROG_LRT: case PKS_PROG_HASH:
    case PKS_PROG_EMPTY: return 0;
    default: return -1;
    }
}

int pks_service_run(pks_table *t, uint32_t id, uint32_t vip, uint16_t port, int prog,
                    const pks_pick *members, uint32_t n, const int64_t *state, uint32_t nstate)
{
    if (state_len(prog, n) != (int64_t)nstate || n > PKS_MEMBERS_MAX
        || (prog == PKS_PROG_EMPTY) != (n == 0) || (n && !members) || (nstate && !state))
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (members[i].backend >= t->bk_load_cap)
            return -1;
    if (prog == PKS_PROG_RR && state[0] < 0)
        return -1;
    pks_pick *picks = n ? malloc(n * sizeof *picks) : NULL;
    int64_t *copy = nstate ? malloc(nstate * sizeof *copy) : NULL;
    if ((n && !picks) || (nstate && !copy))
        goto fail;
    if (n)
        memcpy(picks, members, n * sizeof *picks);
    if (nstate)
        memcpy(copy, state, nstate * sizeof *copy);
    if (service_program(t, id, vip, port, prog, picks, n, copy, nstate))
        return 0;
fail:
    free(picks);
    free(copy);
    return -1;
}

int pks_service_hash(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                     const pks_pick *members, uint32_t n, const uint32_t *slots, uint32_t size,
                     int with_port)
{
    if (!n || !size || size > PKS_SLOTS_MAX)
        return -1;
    for (uint32_t i = 0; i < size; i++)
        if (slots[i] >= n && slots[i] != PKS_NONE)
            return -1;
    uint32_t *copy = malloc((size_t)size * sizeof *copy);
    if (!copy || pks_service_run(t, id, vip, port, PKS_PROG_HASH, members, n, NULL, 0) != 0) {
        free(copy);
        return -1;
    }
    pks_service *s = service_of(t, id);
    memcpy(copy, slots, (size_t)size * sizeof *copy);
    s->slots = copy;
    s->size = size;
    s->with_port = !!with_port;
    return 0;
}

int pks_service_transport(pks_table *t, uint32_t id, int proto, double udp_timeout,
                          int one_packet)
{
    pks_service *s = service_of(t, id);
    if (!s || (proto != PKS_PROTO_TCP && proto != PKS_PROTO_UDP)
        || !(udp_timeout > 0 && udp_timeout <= PKS_TIMEOUT_MAX)
        || (one_packet && proto != PKS_PROTO_UDP))
        return -1;
    s->proto = (uint8_t)proto;
    s->udp_timeout = udp_timeout;
    s->one_packet = (uint8_t)!!one_packet;
    return 0;
}

int pks_service_forget(pks_table *t, uint32_t id)
{
    pks_service *s = service_of(t, id);
    if (!s)
        return -1;
    free(s->picks);
    free(s->state);
    free(s->slots);
    free(s->acl);
    *s = t->svc[--t->nsvc];
    return 0;
}

int64_t pks_service_state(const pks_table *t, uint32_t id, int64_t *out, uint32_t max)
{
    const pks_service *s = service_of((pks_table *)t, id);
    if (!s || s->nstate > max)
        return -1;
    if (s->nstate)
        memcpy(out, s->state, s->nstate * sizeof *out);
    return s->nstate;
}

int pks_backend_rt(pks_table *t, uint32_t backend, double rt)
{
    if (backend >= t->bk_load_cap || !(rt >= 0 || rt == -1))
        return -1;
    t->bk_load[backend].rt = rt;
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
