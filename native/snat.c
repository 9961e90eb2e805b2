/* The SNAT pool of full NAT: per backend endpoint, fresh pairs first, then freed ones,
 * oldest first. */
#include "pks_internal.h"

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
int grow(void **arr, uint32_t *cap, uint32_t i, size_t size, int fill)
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
