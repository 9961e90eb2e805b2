/* The drain loop: the established-flow loop in C, the only C that makes system calls. */
#pragma once
#include <stdint.h>
#include "pks_table.h"

/* pks_drain: the established-flow loop in C, for a TUN device opened non-blocking */
#define PKS_D_EMPTY 0   /* the device has no more packets */
#define PKS_D_PYTHON 1  /* buf holds a packet Python must decide on (len, verdict, now, m) */
#define PKS_D_BUDGET 2  /* budget packets forwarded, more may be waiting */
#define PKS_D_ERROR 3   /* read failed: errno in err */
#define PKS_D_OTHER 4   /* while waiting, another fd of the caller's epoll set became ready */
#define PKS_WAIT_MAX 60 /* seconds one epoll_wait may sleep (a longer wait is several) */

typedef struct {
    uint32_t forwarded;     /* packets C read, rewrote and wrote back by itself */
    uint32_t largest;       /* the largest read so far, in bytes (never reset) */
    uint32_t write_errors;  /* writes the kernel refused; the last errno in err */
    uint32_t wait_failed;   /* with PKS_D_ERROR: epoll_wait failed, not read */
    int32_t err;
    int32_t status;         /* PKS_D_* */
    uint32_t len;           /* with PKS_D_PYTHON: the packet's length in buf */
    int32_t verdict;        /* with PKS_D_PYTHON: pks_process's verdict (SLOW or DROP) */
    double now;             /* with PKS_D_PYTHON: the time it was read (CLOCK_MONOTONIC) */
} pks_drain_result;

/* Reads packets from fd into buf and handles each with pks_process; a FAST one is written
 * back at once, anything else stops the loop and is left in buf for Python. At most budget
 * packets. The clock is CLOCK_MONOTONIC, Python's time.monotonic().
 *
 * When the device is empty and wait > 0 (seconds), it waits there instead of returning:
 * epoll_wait on epfd, the caller's own epoll set (level-triggered, holding fd, each entry's
 * data.fd the fd as Python's select.epoll registers it), for `wait` at most in all. Only fd
 * ready: back to reading; any other fd ready: PKS_D_OTHER, so the caller serves it
 * (level-triggered, its own epoll_wait reports it again); epoll_wait failing: PKS_D_ERROR
 * with wait_failed set. It does not wait, and says PKS_D_EMPTY, when the event
 * ring or the trace buffer holds anything (Python applies events, which may move its
 * timers, and hands records to whoever traces before it sleeps),
 * when the wait ends, or when a signal interrupts it (Python runs its handlers). */
void pks_drain(pks_table *t, int fd, uint8_t *buf, uint32_t cap, int vnet, uint32_t budget,
               pks_meta *m, int epfd, double wait, pks_drain_result *r);
/* pks_drain's work on packets already read, for the core benchmark (no device, no
 * syscalls): each of the n packets of `size` bytes at pkts + i * size is copied into buf (cap
 * bytes) as read() would, stamped with CLOCK_MONOTONIC and processed. Stops at the first
 * packet that is not PKS_V_FAST; returns how many were (0 when buf has no PKS_ROOM beyond
 * size). */
uint32_t pks_process_many(pks_table *t, const uint8_t *pkts, uint32_t size, uint32_t n,
                          uint8_t *buf, uint32_t cap, int vnet, pks_meta *m);
