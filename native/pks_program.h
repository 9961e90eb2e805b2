/* What Python writes into the table for C to open flows by: each service's program (a
 * period, a hash table, least-loaded members), its access list, the hash key, the SNAT pool. */
#pragma once
#include <stdint.h>
#include "pks_table.h"

/* Schedules service `id` (at vip:port, host order) in C with the period of n answers in
 * picks (copied), starting at answer `cursor`; n = 0 forgets the service (removed: a SYN to
 * its VIP and port is no service's).
 * 0; -1 no memory, too many services, n > PKS_PERIOD_MAX or cursor >= n */
int pks_service_set(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                    const pks_pick *picks, uint32_t n, uint32_t cursor);
/* Service `id` at vip:port without a program C runs: prog PKS_PROG_PYTHON (Python
 * schedules its flows) or PKS_PROG_EMPTY (no backend takes them); its access list stays.
 * 0; -1 another prog, too many services */
int pks_service_prog(pks_table *t, uint32_t id, uint32_t vip, uint16_t port, int prog);
/* Schedules service `id` in C by a hash table: n members (picks, reason ignored), `size`
 * slots each a member index or PKS_NONE; with_port: the client port is hashed too. 0; -1 no
 * memory, too many services, n or size 0 or over PKS_PERIOD_MAX / PKS_SLOTS_MAX, a slot out
 * of range. pks_service_set(..., 0, 0) leaves it to Python again. */
int pks_service_hash(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                     const pks_pick *members, uint32_t n, const uint32_t *slots, uint32_t size,
                     int with_port);
/* Schedules service `id` in C by the least load of its n members (picks: backend, address,
 * port, weight; reason ignored): how = PKS_LEAST_COUNT (lc) or PKS_LEAST_PER_WEIGHT (wlc).
 * 0; -1 no memory, too many services, n 0 or over PKS_PERIOD_MAX, another `how`, or a
 * member not counted (at or above bk_load_cap). pks_service_set(..., 0, 0) leaves it to
 * Python. */
int pks_service_least(pks_table *t, uint32_t id, uint32_t vip, uint16_t port,
                      const pks_pick *members, uint32_t n, int how);
int pks_service_acl(pks_table *t, uint32_t id, const uint32_t *prefixes, uint32_t nallow,
                    uint32_t ndeny);
/* The key of the hashing schedulers: 0, -1 longer than PKS_HASH_KEY_MAX or empty */
int pks_table_set_hash_key(pks_table *t, const uint8_t *key, uint32_t len);
/* Keyed BLAKE2b (RFC 7693) of data, 8-byte digest as a little-endian integer; key 1..64
 * bytes, data at most 128 */
uint64_t pks_hash64(const uint8_t *key, uint32_t keylen, const uint8_t *data, uint32_t len);
/* The answer index the next flow of service id gets, advanced by one if advance; -1 when
 * the service is not scheduled in C by a period */
int64_t pks_service_next(pks_table *t, uint32_t id, int advance);
/* The answers taken from service id's period since it was written; -1 when the service is
 * not scheduled in C by a period */
int64_t pks_service_taken(pks_table *t, uint32_t id);
/* The SNAT pool for C to open full-NAT flows with (NULL: nat mode, no SNAT), and the
 * addresses its pair numbers stand for (host order, pool->naddrs of them, PKS_SNAT_ADDRS
 * at most): 0, -1 for another count */
int pks_table_set_snat(pks_table *t, pks_snat *pool, const uint32_t *addrs, uint32_t n);
