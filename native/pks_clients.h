/* Per-client limits (HAProxy's stick tables, IPVS's drop_entry). */
#pragma once
#include <stdint.h>

/* A service may cap one client's flows and new flows per second (pks_service_limits), a
 * client being its address or a prefix of it. C keeps, per (service, prefix), the client's
 * flows in the table that have not finished (TIME_WAIT and CLOSE ones do not count, as
 * HAProxy's conn_cur counts open connections), and when its next new flow is due at the
 * rate (GCRA, the token bucket as one time: `tat`, the theoretical arrival time; a new flow
 * is allowed while tat is at most (burst - 1) / rate ahead of now, and moves it on by
 * 1 / rate), in one table made on the first limit. An entry with no flow and tat passed holds nothing: sweeps delete it
 * (pks_clients_sweep, and a full table before it refuses a new client: clients_full). */
#define PKS_CLIENTS_MIN 1024    /* the client table's least capacity (else 2 x the flows) */
#define PKS_CLIENTS_SWEEP 64    /* entries a full table sweeps before it refuses a client */

typedef struct {
    uint32_t addr;      /* the client's address masked to its prefix, host order */
    uint32_t svc_bits;  /* Python's service number << 6 | the prefix's bits (1..32);
                           PKS_NONE: an empty entry */
    uint32_t flows;     /* its flows in the table */
    uint32_t pad;
    double tat;         /* GCRA: when its next new flow is due at the rate */
} pks_client;

typedef struct {
    uint32_t mask;      /* capacity - 1 (a power of two) */
    uint32_t count;     /* entries in use */
    uint32_t limit;     /* entries it holds at most: three quarters of its capacity */
    uint32_t cursor;    /* where the next sweep starts */
    pks_client *slots;
} pks_clients;
