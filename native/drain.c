/* The drain loop: the only C that makes system calls (read, write, epoll_wait). */
#include "pks_internal.h"

#include <sys/epoll.h>
#include <unistd.h>

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* the TUN device is empty: wait on the caller's epoll set until it is readable again (1),
 * or say why not (0, r->status set) */
static int drain_wait(pks_table *t, int fd, int epfd, double deadline, pks_drain_result *r)
{
    r->status = PKS_D_EMPTY;
    if (t->ev_count || t->trace_used)
        return 0;
    struct epoll_event ev[8];
    for (;;) {
        double left = deadline - monotonic_now();
        if (left <= 0)
            return 0;
        if (left > PKS_WAIT_MAX)
            left = PKS_WAIT_MAX;                /* the loop comes back to wait again */
        int ms = (int)(left * 1000.0) + 1;      /* rounded up: no spinning on a last 0 ms */
        int n = epoll_wait(epfd, ev, 8, ms);
        if (n < 0) {
            if (errno != EINTR) {
                r->err = errno;
                r->status = PKS_D_ERROR;
                r->wait_failed = 1;
            }
            return 0;
        }
        if (n == 0)
            continue;                           /* the deadline is checked above */
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd != fd) {
                r->status = PKS_D_OTHER;
                return 0;
            }
        return 1;
    }
}

uint32_t pks_process_many(pks_table *t, const uint8_t *pkts, uint32_t size, uint32_t n,
                          uint8_t *buf, uint32_t cap, int vnet, pks_meta *m)
{
    if (size > cap || cap - size < PKS_ROOM)    /* (what C may answer with: pks_process) */
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(buf, pkts + (size_t)i * size, size);
        if (pks_process(t, buf, size, monotonic_now(), m, vnet) != PKS_V_FAST)
            return i;
    }
    return n;
}

void pks_drain(pks_table *t, int fd, uint8_t *buf, uint32_t cap, int vnet, uint32_t budget,
               pks_meta *m, int epfd, double wait, pks_drain_result *r)
{
    double deadline = wait > 0 ? monotonic_now() + wait : 0;
    r->forwarded = 0;
    r->write_errors = 0;
    r->wait_failed = 0;
    r->status = PKS_D_BUDGET;
    while (r->forwarded < budget) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait > 0 && drain_wait(t, fd, epfd, deadline, r))
                    continue;
                if (wait <= 0)
                    r->status = PKS_D_EMPTY;
                return;
            }
            r->err = errno;
            r->status = PKS_D_ERROR;
            return;
        }
        if ((uint32_t)n > r->largest)
            r->largest = (uint32_t)n;
        double now = monotonic_now();
        int v = pks_process(t, buf, (uint32_t)n, now, m, vnet);
        if (v != PKS_V_FAST) {
            r->status = PKS_D_PYTHON;
            r->len = (uint32_t)n;
            r->verdict = v;
            r->now = now;
            return;
        }
        /* what pks_process made of it: the same length, or a packet of its own (cookie.c) */
        if (write(fd, buf, (size_t)m->hdr + m->ip_len) < 0) {
            r->write_errors++;
            r->err = errno;
        }
        r->forwarded++;
    }
}
