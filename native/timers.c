/* Idle expiry: a heap of deadlines, one live entry per flow, O(expired) per call. */
#include "pks_internal.h"

static inline int timer_before(const pks_timer *a, const pks_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_up(pks_timer *h, uint32_t i)
{
    pks_timer e = h[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!timer_before(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static void heap_down(pks_timer *h, uint32_t n, uint32_t i)
{
    pks_timer e = h[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && timer_before(&h[c + 1], &h[c]))
            c++;
        if (!timer_before(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static int entry_live(const pks_table *t, const pks_timer *e)
{
    const pks_flow *f = &t->flows[e->slot];
    return f->used && f->timer_seq == e->seq;
}

/* Drops the stale entries once they outnumber the live ones: a flood of flows removed
 * before their timer comes due would otherwise keep their entries until each deadline. */
void heap_compact(pks_table *t)
{
    if (t->stale <= COMPACT_MIN || t->stale <= t->heap_len / 2)
        return;
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->heap_len; i++)
        if (entry_live(t, &t->heap[i]))
            t->heap[n++] = t->heap[i];
    t->heap_len = n;
    for (uint32_t i = n / 2; i-- > 0;)
        heap_down(t->heap, n, i);
    t->stale = 0;
}

/* Room for one more entry in the heap (compacting or growing it): 0, or -3 no memory */
int timer_room(pks_table *t)
{
    if (t->heap_len == t->heap_cap) {
        heap_compact(t);
        if (t->heap_len == t->heap_cap) {
            uint32_t cap = t->heap_cap ? t->heap_cap * 2 : HEAP_FIRST;
            if (cap < t->heap_cap)
                return -3;
            pks_timer *h = realloc(t->heap, (size_t)cap * sizeof *h);
            if (!h)
                return -3;
            t->heap = h;
            t->heap_cap = cap;
        }
    }
    return 0;
}

/* a new live entry for the flow at slot; its earlier one, if any, turns stale */
int timer_push(pks_table *t, uint32_t slot, double due)
{
    if (timer_room(t) != 0)
        return -3;
    pks_flow *f = &t->flows[slot];
    if (f->timer_seq)
        t->stale++;
    if (++t->timer_seq == 0)
        t->timer_seq = 1;                       /* 0 means "no entry" */
    f->timer_seq = t->timer_seq;
    f->timer_due = due;
    pks_timer *e = &t->heap[t->heap_len++];
    e->due = due;
    e->slot = slot;
    e->seq = t->timer_seq;
    heap_up(t->heap, t->heap_len - 1);
    return 0;
}

double pks_next_due(const pks_table *t)
{
    return t->heap_len ? t->heap[0].due : -1.0;
}

uint32_t pks_expire(pks_table *t, double now, uint32_t *out, uint32_t max)
{
    uint32_t n = 0;
    while (n < max && t->heap_len && t->heap[0].due <= now) {
        pks_timer e = t->heap[0];
        t->heap[0] = t->heap[--t->heap_len];
        if (t->heap_len)
            heap_down(t->heap, t->heap_len, 0);
        if (!entry_live(t, &e)) {
            t->stale--;
            continue;                           /* removed, or given an earlier entry since */
        }
        pks_flow *f = &t->flows[e.slot];
        f->timer_seq = 0;                       /* this entry is gone */
        double expires = f->last_seen + f->timeout;
        if (expires > now) {                    /* traffic since: pushed back */
            if (timer_push(t, e.slot, expires) == 0)
                continue;
        }
        out[n++] = e.slot;                      /* (or no memory to push back: expire it) */
    }
    return n;
}
