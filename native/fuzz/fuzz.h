/* What the fuzz harness's files share (fuzz_main.c has the theory): the model, checks and
 * drivers each file offers the others. */
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../pks.h"

#define NSLOTS 8
#define MAX_OPS 64
#define EMPTY_ENTRY 0xffffffffu

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                             \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

typedef struct {
    uint8_t used, state, measured, synacked;
    double req_at;
    pks_key key[2];
    pks_nat nat[2];
    uint64_t pkts[2], bytes[2];
} model_slot;

typedef struct {
    pks_table *t;
    model_slot s[NSLOTS];
} model;

/* ------------------------------------------------------------ new flows in C
 * The packet's service runs a program (1..4 members from the input: rr and wrr with their
 * state, a hash table, lc, wlc or lrt), with a small SNAT pool (or none: nat mode) and a small
 * half-open limit; then 2-byte operations from the input play the client and Python: SYNs
 * from other client ports (new, retransmitted, or reusing a port in TIME_WAIT/CLOSE), state
 * changes, expiry and removal (each freeing its SNAT pair, as Python's _expire), events
 * taken, the program rewritten or forgotten. After each: every used flow is indexed both
 * ways, the count, the half-open list, the free stack and the timer heap agree, every SNAT
 * pair in use belongs to exactly one flow of its endpoint and the pool's counts say so, and
 * every event says what happened to its slot; each new flow is on the member the program
 * names (the program's own state replayed here). */
typedef struct {
    pks_table *t;
    pks_snat *pool;
    uint32_t opened, ended;
    pks_pick picks[4];      /* the service as programmed: members, and a hash table or none */
    uint32_t n, slots[8], size, with_port;
    int prog;               /* PKS_PROG_*, or -1: no program (forgotten) */
    int64_t state[4];       /* what the program's state must be */
    int refused;            /* its access list refuses the client (C must drop its SYNs) */
    uint32_t cookie, cookie_isn; /* the last SYN cookie C sent, and the SYN's ISN */
    uint8_t cookie_port;    /* its client port, 0: none sent */
} opens;

static const uint8_t HKEY[] = "pktswitch-sched";

/* service numbers above 16 bits, as a switch that has had many services gives */
#define SVC 0x10007u        /* the one programmed */
#define SVC_OTHER 0x10008u  /* one whose program is refused */
#define SVC_NONE 0x10009u   /* one never programmed */

/* offered by one file to the others */
uint16_t ref_csum(const uint8_t *buf, uint32_t len, uint32_t sum);
uint32_t csum_at(const pks_meta *m);
uint32_t l4_covered(const uint8_t *buf, const pks_meta *m);
uint32_t pseudo_sum(const uint8_t *buf, uint32_t l4len, uint8_t proto);
int l4_csum_ok(const uint8_t *buf, const pks_meta *m);
uint16_t full_ip_csum(const uint8_t *buf, uint32_t ihl);
uint16_t full_l4_csum(const uint8_t *buf, const pks_meta *m);
int same_csum(uint16_t a, uint16_t b);
int is_rewritable_byte(uint32_t i, uint32_t l4, uint32_t field);
void check_meta(const uint8_t *buf, uint32_t len, const pks_meta *m);
void check_icmp_meta(const uint8_t *buf, uint32_t len, const pks_meta *m);
uint32_t partial_residue(const uint8_t *ip, const pks_meta *m);
int parse_mode(const uint8_t *buf, uint32_t len, pks_meta *m, int vnet);
void check_rewrite(const uint8_t *before, const uint8_t *after, uint32_t len,
                          const pks_meta *m, const pks_nat *n, int vnet);
void small_key(uint8_t b, pks_key *k);
void make_nat(const uint8_t *data, size_t size, uint32_t salt, pks_nat *n);
int64_t model_find(const model *md, const pks_key *k);
void check_key(const model *md, const pks_key *k);
void check_lists(const model *md);
void check_free(const pks_table *t);
void check_table(const model *md, int full);
int insert_rc(const model *md, uint32_t slot, const pks_key *k0, const pks_key *k1);
void reverse_key(const pks_key *k, pks_nat *n);
void model_insert(model *md, uint32_t slot, const pks_key *k0, const pks_key *k1);
uint8_t grid_cell(uint32_t dir, uint32_t ev, uint32_t state);
void load_grid(pks_table *t);
void do_insert(model *md, uint32_t slot, const pks_key *k0, const pks_key *k1);
void do_flow_for(model *md, uint32_t slot, const pks_meta *m, const pks_nat *to);
int quote_key(const uint8_t *q, uint32_t len, pks_key *k);
int model_source_ok(uint32_t src);
int model_l4_csum_ok(const uint8_t *ip, const pks_meta *m);
int serial_le(uint32_t a, uint32_t b);
int model_in_flight(const pks_table *t, int64_t e, const uint8_t *q);
void trace_on(pks_table *t, uint8_t knob);
int same_but_csum(const uint8_t *a, const uint8_t *b, uint32_t n, uint32_t at, int partial);
void check_trace(const pks_table *t, uint32_t used, uint64_t lost, const uint8_t *in,
                        const uint8_t *out, size_t size, int v, const pks_meta *pm, int vnet);
void run_process(model *md, const uint8_t *data, size_t size, const pks_meta *m, int vnet);
/* fuzz_window.c: a window for the packet's flow from the input, and what the model expects:
 * the drop reason of a packet of its way d (0: none; *moves 0: an RST that moves nothing),
 * and the flow after */
void window_setup(pks_flow *f, uint8_t d, const uint8_t *data, size_t size, const pks_meta *m);
int window_expect(const pks_flow *f, uint8_t d, const pks_meta *m, const uint8_t *th,
                  int *moves);
void window_after(const pks_flow *was, const pks_flow *f, uint8_t d, const pks_meta *m,
                  const uint8_t *th);
void parse_and_rewrite(const uint8_t *data, size_t size, pks_meta *m, int vnet);
void drive_table(const uint8_t *data, size_t size, const pks_meta *m, int vnet);
void check_opens(opens *o);
void python_remove(opens *o, uint32_t slot, double now);
void take_events(opens *o);
void program(opens *o, const uint8_t *op, const pks_meta *m);
uint32_t check_open_events(const opens *o, uint32_t from, uint32_t slot);
void check_least(const opens *o, uint32_t slot, uint32_t from);
void check_hashed(const opens *o, const pks_flow *f, uint32_t slot_, uint32_t from);
int64_t model_pick(const opens *o, int64_t *state, double *value);
void drive_opens(const uint8_t *data, size_t size, const pks_meta *m, int vnet);
