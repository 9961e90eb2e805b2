/* What Python writes into the table for C to open flows by: each service's program, its
 * access list, the backends' response times, the hash key, the SNAT pool. */
#pragma once
#include <stdint.h>
#include "pks_table.h"

/* Service `id` (at vip:port, host order) runs program `prog` (PKS_PROG_*, pks_service.h)
 * over its n members (copied; every backend of the service, in order), from the nstate
 * values of `state` (copied; PKS_STATE_RR, n for wrr, 0 for the others;
 * rr's not negative). PKS_PROG_EMPTY takes no members. A new program keeps the access list.
 * 0; -1 no memory, too many services or members, another nstate, or a member whose flows
 * are not counted (at or above bk_load_cap). */
int pks_service_run(pks_table *t, uint32_t id, uint32_t vip, uint16_t port, int prog,
                    const pks_pick *members, uint32_t n, const int64_t *state, uint32_t nstate);
/* Service `id` runs a hashing scheduler's table (PKS_PROG_HASH): n members, `size` slots
 * each a member index or PKS_NONE; with_port: the client port is hashed too. 0; -1 as
 * pks_service_run, or size 0 or over PKS_SLOTS_MAX, a slot out of range. */
int pks_service_hash(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                     const pks_pick *members, uint32_t n, const uint32_t *slots, uint32_t size,
                     int with_port);
/* Service `id` is gone (a reload removed it): a SYN to its VIP and port is no service's.
 * 0; -1 no such service */
int pks_service_forget(pks_table *t, uint32_t id);
/* Service `id`'s program state as C has moved it on, into out (max values at most): the
 * number of values; -1 no such service, or more than max */
int64_t pks_service_state(const pks_table *t, uint32_t id, int64_t *out, uint32_t max);
/* Backend `backend`'s smoothed response time (seconds; -1: not measured), which lrt reads:
 * 0; -1 a backend not counted, or another negative time */
int pks_backend_rt(pks_table *t, uint32_t backend, double rt);
/* Service `id`'s transport: PKS_PROTO_TCP (a new service's) or PKS_PROTO_UDP, whose flows
 * idle out after udp_timeout seconds (> 0, at most PKS_TIMEOUT_MAX); one_packet (UDP only):
 * every datagram is scheduled on its own (pks_service.h). Set after pks_service_run or
 * pks_service_hash (a new program keeps it). 0; -1 no such service, another protocol or
 * timeout, one_packet for TCP */
int pks_service_transport(pks_table *t, uint32_t id, int proto, double udp_timeout,
                          int one_packet);
/* Service `id`'s access list (pks_service.h): nallow allow prefixes then ndeny deny ones,
 * (network, mask) pairs. 0; -1 no such service, too long, no memory */
int pks_service_acl(pks_table *t, uint32_t id, const uint32_t *prefixes, uint32_t nallow,
                    uint32_t ndeny);
/* Service `id`'s per-client limits (pks_clients.h): a client (its address's first `bits`
 * bits, 1..32) has at most max_flows flows (0: no limit) and opens at most `rate` new flows
 * per second (0: no limit), `burst` (>= 1) at once; bits 0 removes them (the counts of the
 * flows open stay right). Set after pks_service_run or pks_service_hash (a new program
 * keeps them); the first limit makes the client table (2 x the table's flows, at least
 * PKS_CLIENTS_MIN). 0; -1 no such service, bad bits, rate or burst, or no memory */
int pks_service_limits(pks_table *t, uint32_t id, uint32_t bits, uint32_t max_flows,
                       double rate, double burst);
/* Deletes, from up to max entries of the client table on from where the last sweep ended,
 * those that hold nothing at `now` (no flow, tat passed): how many it deleted */
uint32_t pks_clients_sweep(pks_table *t, double now, uint32_t max);
/* SYN cookies (cookie.c): C answers a SYN with one while `from` half-open flows or more are
 * in the table (0: always; PKS_NONE: never), keyed with key (1..64 bytes): 0, -1 bad key */
int pks_table_set_cookies(pks_table *t, uint32_t from, const uint8_t *key, uint32_t len);
/* 1: C answers a new client's SYN with a cookie now */
int pks_cookies_active(const pks_table *t);
/* The key of the hashing schedulers: 0, -1 longer than PKS_HASH_KEY_MAX or empty */
int pks_table_set_hash_key(pks_table *t, const uint8_t *key, uint32_t len);
/* Keyed BLAKE2b (RFC 7693) of data, 8-byte digest as a little-endian integer; key 1..64
 * bytes, data at most 128 */
uint64_t pks_hash64(const uint8_t *key, uint32_t keylen, const uint8_t *data, uint32_t len);
/* The SNAT pool for C to open full-NAT flows with (NULL: nat mode, no SNAT), and the
 * addresses its pair numbers stand for (host order, pool->naddrs of them, PKS_SNAT_ADDRS
 * at most): 0, -1 for another count */
int pks_table_set_snat(pks_table *t, pks_snat *pool, const uint32_t *addrs, uint32_t n);
