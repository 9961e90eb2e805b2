/* The SNAT pool of full NAT. */
#pragma once
#include <stdint.h>

/* The SNAT pool of full NAT (core/nat.py explains the policy): each backend endpoint has the
 * whole pool of (address, port) pairs; pairs never used are handed out first, in a walk from
 * a start Python picks at random, then freed ones, oldest first (a FIFO ring that grows). A
 * pair number n is address n % naddrs, port lo + n / naddrs. */
#define PKS_TIME_WAIT 60    /* seconds: a backend's TIME_WAIT: a pair reused sooner counts early */
#define PKS_RING_MIN 1024   /* freed pairs an endpoint's ring holds before it first grows */
#define PKS_SNAT_ADDRS 16   /* SNAT addresses C can open flows with */
#define PKS_NUMBER_MAX 16777216 /* endpoint and backend numbers stay below this */

typedef struct {
    uint32_t start;     /* where this endpoint's walk begins */
    uint32_t fresh;     /* pairs handed out at least once */
    uint32_t in_use;
    uint32_t head;      /* the ring of freed pairs: oldest, count, capacity */
    uint32_t count;
    uint32_t cap;
    uint32_t live;      /* added (pks_snat_add) */
    uint32_t *pairs;
    double *times;
    double last_freed;  /* the latest release's time (pks_snat_drop waits out its TIME_WAIT) */
} pks_snatq;

typedef struct {
    uint32_t naddrs;
    uint32_t lo;        /* the first port */
    uint32_t size;      /* pairs: naddrs x ports */
    uint32_t nq;        /* endpoints known */
    uint32_t qcap;
    uint32_t in_use_total;
    pks_snatq *q;
    uint32_t *in_use_by_addr;
    uint64_t exhausted; /* allocations refused: every pair toward that endpoint in use */
    uint64_t early_reuse; /* pairs handed out again within PKS_TIME_WAIT of being freed */
} pks_snat;

pks_snat *pks_snat_new(uint32_t naddrs, uint32_t lo, uint32_t hi);
void pks_snat_free(pks_snat *p);
/* Endpoint number ep's queue, its walk starting at pair `start`: 0; -1 no memory, ep taken
 * already or not below PKS_NUMBER_MAX */
int pks_snat_add(pks_snat *p, uint32_t ep, uint32_t start);
/* A free pair toward endpoint ep (added before): its number, or -1 when all are in use
 * (counted in exhausted) */
int64_t pks_snat_alloc(pks_snat *p, uint32_t ep, double now);
/* Gives pair n toward ep back (at the back of its ring): 0; -1 bad ep/pair, -2 no memory */
int pks_snat_release(pks_snat *p, uint32_t ep, uint32_t n, double now);
/* Drops endpoint ep's queue (its ring's memory; the number may be added again) once no pair
 * toward it is in use and none was freed within PKS_TIME_WAIT of now, so that the backend's
 * TIME_WAITs are gone and a new queue's fresh walk may hand out any pair: 0; -1 not added or
 * a pair in use, -2 a pair freed too recently */
int pks_snat_drop(pks_snat *p, uint32_t ep, double now);
