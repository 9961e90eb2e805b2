/* What the native sources share beyond the public interface (pks.h): small helpers and the
 * functions one concern offers another. Not part of the cffi declaration. */
#pragma once
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pks.h"

#define PKS_HIDDEN __attribute__((visibility("hidden")))

#define EMPTY 0xffffffffu
/* The timer heap's first allocation, and the stale entries it tolerates before compaction;
 * the fuzz build makes both tiny so that growth and compaction run on its small tables. */
#ifndef HEAP_FIRST
#define HEAP_FIRST 1024
#endif
#ifndef COMPACT_MIN
#define COMPACT_MIN PKS_COMPACT_MIN
#endif

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) << 16 | rd16(p + 2); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* where a transport header's checksum field is: TCP's at 16, UDP's at 6 */
static inline uint32_t pks_csum_field(uint8_t proto) { return proto == PKS_PROTO_UDP ? 6 : 16; }

static inline uint32_t fold(uint32_t s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return s;
}

/* C leaves the packet to Python, saying why (counted), or drops it, saying why */
static inline int slow_exit(pks_table *t, pks_meta *m, int why)
{
    m->slow = (uint8_t)why;
    t->slow[why]++;
    return PKS_V_SLOW;
}

static inline int drop_exit(pks_meta *m, int why)
{
    m->err = why;
    return PKS_V_DROP;
}

/* offered by one source file to the others */
/* clients.c */
PKS_HIDDEN int client_check(pks_table *t, const pks_service *s, uint32_t addr, double now);
PKS_HIDDEN void client_open(pks_table *t, const pks_service *s, uint32_t slot, double now);
PKS_HIDDEN void client_count(pks_table *t, const pks_flow *f, int counts);
/* flows.c */
PKS_HIDDEN int flow_state(pks_table *t, uint32_t slot, uint8_t state, double now);
PKS_HIDDEN int flow_state_for(pks_table *t, uint32_t slot, uint8_t state, double timeout,
                              double now);
PKS_HIDDEN uint32_t free_slot(const pks_table *t);
/* pks_table_insert; one_packet: only k1 is indexed (a one-packet flow, pks_service.h) */
PKS_HIDDEN int flow_insert(pks_table *t, uint32_t slot, const pks_key *k0, const pks_key *k1,
                           int one_packet);
/* a packet of flow f, its direction m->dir, passed on: counted, its time the flow's last */
PKS_HIDDEN void flow_count(pks_table *t, pks_flow *f, const pks_meta *m, double now);
/* the number in the SNAT pool (pks_snat.h) of the pair flow g holds */
PKS_HIDDEN uint32_t pair_of(const pks_table *t, const pks_flow *g);
/* flow g gives its SNAT pair back (freed when its last packet was seen: the pool counts a
 * pair reused within a backend's TIME_WAIT of that) */
PKS_HIDDEN void give_back(pks_table *t, const pks_flow *g);
PKS_HIDDEN void key_reverse(const pks_key *k, pks_nat *n);
PKS_HIDDEN void put4(uint8_t *p, uint32_t v);
/* icmp.c */
PKS_HIDDEN int native_icmp(pks_table *t, uint8_t *buf, pks_meta *m, double now);
/* open.c */
PKS_HIDDEN int native_open(pks_table *t, uint8_t *buf, pks_meta *m, double now, uint32_t old);
/* process.c: pks_process without tracing */
PKS_HIDDEN int process_packet(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m,
                              int vnet);
/* service.c */
PKS_HIDDEN int acl_permits(const pks_service *s, uint32_t addr);
PKS_HIDDEN pks_service *service_of(pks_table *t, uint32_t id);
/* snat.c */
PKS_HIDDEN int grow(void **arr, uint32_t *cap, uint32_t i, size_t size, int fill);
/* table.c */
PKS_HIDDEN void event_write(pks_table *t, uint32_t at, uint32_t slot, uint8_t kind,
                            uint8_t from, uint8_t to, uint8_t dir, double now, double value);
PKS_HIDDEN void event_put(pks_table *t, uint32_t slot, uint8_t kind, uint8_t from, uint8_t to,
                      uint8_t dir, double now, double value);
PKS_HIDDEN void index_del(pks_table *t, uint32_t e);
PKS_HIDDEN void index_put(pks_table *t, uint32_t e);
/* cookie.c */
PKS_HIDDEN int cookie_answer(pks_table *t, uint8_t *buf, pks_meta *m, double now);
PKS_HIDDEN int cookie_valid(const pks_table *t, const uint8_t *buf, const pks_meta *m,
                            double now, uint32_t *isn);
PKS_HIDDEN void cookie_to_syn(uint8_t *buf, pks_meta *m, uint32_t isn, int mss);
PKS_HIDDEN int cookie_inbound(uint8_t *buf, pks_meta *m, pks_flow *f);
PKS_HIDDEN void cookie_undo(uint8_t *buf, const pks_meta *m, const pks_flow *f);
PKS_HIDDEN int cookie_outbound(pks_table *t, uint8_t *buf, pks_meta *m, pks_flow *f);
/* hash.c */
PKS_HIDDEN uint64_t b2_finish(const uint64_t keyed[8], const uint8_t *data, uint32_t len);
PKS_HIDDEN void b2_keyed(uint64_t h[8], const uint8_t *key, uint32_t keylen, int last);
/* window.c */
PKS_HIDDEN const uint8_t *tcp_option(const uint8_t *th, uint32_t hlen, uint8_t kind,
                                     uint8_t len);
PKS_HIDDEN void window_syn(pks_flow *f, uint8_t d, const uint8_t *th, uint32_t hlen);
PKS_HIDDEN int window_check(pks_table *t, const pks_flow *f, const pks_meta *m,
                            const uint8_t *th);
PKS_HIDDEN void window_update(pks_flow *f, const pks_meta *m, const uint8_t *th);
/* trace.c: pks_process while tracing */
PKS_HIDDEN int trace_process(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m,
                             int vnet);
/* timers.c */
PKS_HIDDEN void heap_compact(pks_table *t);
PKS_HIDDEN int timer_push(pks_table *t, uint32_t slot, double due);
PKS_HIDDEN int timer_room(pks_table *t);
