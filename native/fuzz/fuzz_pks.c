/* libFuzzer harness for the native core (native/); built and run by tools/fuzz.sh.
 *
 * Every input is tried twice, as a bare IP packet (pks_parse, pks_process(..., vnet = 0)) and
 * as one behind a virtio_net_hdr (pks_parse_vnet, vnet = 1), and is in each case at once:
 *   - a packet: copied into a heap buffer of exactly its length (so AddressSanitizer sees any
 *     read past it) and parsed;
 *   - when it parses, a rewrite: pks_rewrite with a nat made from the input's first 12 bytes
 *     XOR its last 12 (so bytes past the IP total length, which no checksum covers, steer it),
 *     then the reverse rewrite, both checked against the invariants below;
 *   - a program for an 8-slot flow table: 3-byte operations read from the end of the input
 *     backwards (insert / remove / lookup / a flow for the packet), checked against a model
 *     after every step, then pks_process (and pks_apply) on the packet.
 *
 * Invariants (abort() on violation, which libFuzzer reports as a crash):
 *   parse   - the error is a named PKS_E_*; on success every meta field matches the bytes;
 *             the vnet parse adds exactly the virtio_net_hdr checks; pks_csum agrees with a
 *             byte-wise reference implementation of RFC 1071.
 *   rewrite - only bytes 10-11 (IP checksum), 12-19 (addresses) and the TCP ports and checksum
 *             change, to exactly the nat; the IP checksum still verifies and equals a full
 *             recompute (unless it was 0xffff, the one's complement -0 RFC 1624 may keep);
 *             the TCP checksum (with pseudo-header) is valid afterwards iff it was before, and
 *             then also equals a full recompute; with a partial checksum (NEEDS_CSUM) the
 *             field keeps its difference to the pseudo-header sum; the virtio_net_hdr is never
 *             written; the packet re-parses to the same meta; the reverse rewrite restores
 *             every byte (checksums up to the two encodings of zero).
 *   table   - every key of a used slot is found at slot << 1 | dir, a removed one is not;
 *             nkeys == 2 * used slots; the index holds exactly nkeys entries, each of a used
 *             slot and found by lookup (so no other key can be); return codes match the model;
 *             the free stack holds exactly the unused slots; pks_process counts and rewrites the packet exactly when the model
 *             says it must, and leaves the buffer alone otherwise; with a state grid loaded
 *             (half the inputs) it moves a flow's state by the grid on RST, SYN, FIN and
 *             ACK, counts the client's SYNs, tells a backend's RST before any SYN-ACK, and
 *             times the first response, each reported as exactly the event the model expects;
 *             an ICMP error about a flow (the model inserts one its quote is about) comes out
 *             with valid checksums, quoting the packet as the flow's other way sees it, and
 *             any other ICMP is dropped with an icmp_* reason, the buffer untouched.
 *   opens   - with the packet's service running a program (rr, wrr, lrt with their state, a
 *             hash table with empty slots, lc, wlc), a small SNAT pool and half-open limit
 *             (drive_opens): SYNs from other client ports, state changes, expiry, removals,
 *             events and reprogramming in any order keep every used flow indexed, the count,
 *             half-open list, free stack and timer heap right, each SNAT pair in use held by
 *             one flow of its endpoint and counted so, and each pick the program's.
 *   trace   - with a trace buffer of 1 to 4 records (some inputs of table and opens), every
 *             decision appends exactly one record, or counts one lost when it does not fit,
 *             whose verdict, reason, lengths, flow and state match, and whose copies are the
 *             packet as it came and left (a partial checksum finished in them).
 */
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
            fprintf(stderr, "fuzz_pks: invariant failed at line %d: %s\n", __LINE__,    \
                    #cond);                                                             \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

/* RFC 1071 the slow, obvious way: independent of pks_csum's loop. */
static uint16_t ref_csum(const uint8_t *buf, uint32_t len, uint32_t sum)
{
    uint64_t s = sum;
    for (uint32_t i = 0; i < len; i++)
        s += (i & 1) ? buf[i] : (uint32_t)buf[i] << 8;
    while (s > 0xffff)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)(0xffff - s);
}

/* partial sum of the TCP pseudo-header of an IPv4 packet */
static uint32_t pseudo_sum(const uint8_t *buf, uint32_t l4len)
{
    uint32_t s = 0;
    for (int i = 12; i < 20; i += 2)
        s += get16(buf + i);
    return s + 6 + l4len;
}

static int tcp_csum_ok(const uint8_t *buf, const pks_meta *m)
{
    uint32_t l4len = m->ip_len - m->l4_off;
    return pks_csum(buf + m->l4_off, l4len, pseudo_sum(buf, l4len)) == 0;
}

/* the checksum a sender would write: computed with the field taken as 0 */
static uint16_t full_ip_csum(const uint8_t *buf, uint32_t ihl)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i < ihl; i += 2)
        if (i != 10)
            s += get16(buf + i);
    return ref_csum(NULL, 0, s);
}

static uint16_t full_tcp_csum(const uint8_t *buf, const pks_meta *m)
{
    uint32_t l4len = m->ip_len - m->l4_off;
    const uint8_t *th = buf + m->l4_off;
    uint32_t s = pseudo_sum(buf, l4len) + 0xffff - get16(th + 16); /* the field as 0 */
    return pks_csum(th, l4len, s);
}

/* equal as one's complement numbers: 0x0000 and 0xffff are both zero */
static int same_csum(uint16_t a, uint16_t b)
{
    return a == b || ((a == 0 || a == 0xffff) && (b == 0 || b == 0xffff));
}

static int is_rewritable_byte(uint32_t i, uint32_t l4)
{
    return (i >= 10 && i < 20) || (i >= l4 && i < l4 + 4) || i == l4 + 16 || i == l4 + 17;
}

static void check_meta(const uint8_t *buf, uint32_t len, const pks_meta *m)
{
    CHECK(m->err == PKS_OK);
    CHECK(m->ip_len <= len && m->ip_len == get16(buf + 2));
    CHECK(m->l4_off == (buf[0] & 0x0f) * 4 && m->l4_off >= 20);
    CHECK(m->l4_off + 20u <= m->ip_len);
    uint32_t doff = (uint32_t)(buf[m->l4_off + 12] >> 4) * 4;
    CHECK(doff >= 20 && m->payload == m->ip_len - m->l4_off - doff);
    CHECK(m->ip_csum == get16(buf + 10) && m->l4_csum == get16(buf + m->l4_off + 16));
    CHECK(m->tcp_flags == buf[m->l4_off + 13]);
    CHECK(m->slot == -1 && m->dir == 0);
    CHECK(m->key.family == 4 && m->key.proto == 6 && m->key.pad == 0);
    CHECK(m->key.sport == get16(buf + m->l4_off) && m->key.dport == get16(buf + m->l4_off + 2));
    CHECK(m->sport == m->key.sport && m->dport == m->key.dport);
    CHECK(m->saddr4 == get32(buf + 12) && m->daddr4 == get32(buf + 16));
    CHECK(memcmp(m->key.saddr, buf + 12, 4) == 0 && memcmp(m->key.daddr, buf + 16, 4) == 0);
    static const uint8_t zero[12];
    CHECK(memcmp(m->key.saddr + 4, zero, 12) == 0 && memcmp(m->key.daddr + 4, zero, 12) == 0);
    CHECK(pks_csum(buf, m->l4_off, 0) == 0);
    CHECK((buf[6] << 8 | buf[7]) % 0x4000 == 0 && buf[9] == 6);
}

/* an ICMP packet: parsed as far as its type and code, with no ports */
static void check_icmp_meta(const uint8_t *buf, uint32_t len, const pks_meta *m)
{
    CHECK(m->err == PKS_OK && buf[9] == PKS_PROTO_ICMP);
    CHECK(m->ip_len <= len && m->ip_len == get16(buf + 2));
    CHECK(m->l4_off == (buf[0] & 0x0f) * 4 && m->l4_off >= 20);
    CHECK(m->l4_off + 8u <= m->ip_len && m->payload == m->ip_len - m->l4_off - 8);
    CHECK(m->icmp_type == buf[m->l4_off] && m->icmp_code == buf[m->l4_off + 1]);
    CHECK(m->ip_csum == get16(buf + 10) && m->l4_csum == get16(buf + m->l4_off + 2));
    CHECK(m->tcp_flags == 0 && m->slot == -1 && m->dir == 0);
    CHECK(m->key.family == 4 && m->key.proto == PKS_PROTO_ICMP && m->key.pad == 0);
    CHECK(m->key.sport == 0 && m->key.dport == 0 && m->sport == 0 && m->dport == 0);
    CHECK(m->saddr4 == get32(buf + 12) && m->daddr4 == get32(buf + 16));
    CHECK(pks_csum(buf, m->l4_off, 0) == 0);
    CHECK((buf[6] << 8 | buf[7]) % 0x4000 == 0);
}

/* a partial checksum field (virtio NEEDS_CSUM) minus the pseudo-header sum, mod 0xffff: 0 when
 * the sender wrote the sum it should; a rewrite must keep it, whatever it is */
static uint32_t partial_residue(const uint8_t *ip, const pks_meta *m)
{
    uint32_t l4len = m->ip_len - m->l4_off;
    uint32_t field = get16(ip + m->l4_off + 16) % 0xffff;
    return (field + 0xffff - pseudo_sum(ip, l4len) % 0xffff) % 0xffff;
}

static int parse_mode(const uint8_t *buf, uint32_t len, pks_meta *m, int vnet)
{
    return vnet ? pks_parse_vnet(buf, len, m) : pks_parse(buf, len, m);
}

/* `after` is `before` rewritten to n; m is before's parse (in mode vnet) */
static void check_rewrite(const uint8_t *before, const uint8_t *after, uint32_t len,
                          const pks_meta *m, const pks_nat *n, int vnet)
{
    uint32_t h = m->hdr, l4 = m->l4_off;
    for (uint32_t i = 0; i < len; i++)
        if (before[i] != after[i])
            CHECK(i >= h && is_rewritable_byte(i - h, l4));
    const uint8_t *b = before + h, *a = after + h;
    CHECK(memcmp(a + 12, n->saddr, 4) == 0 && memcmp(a + 16, n->daddr, 4) == 0);
    CHECK(get16(a + l4) == n->sport && get16(a + l4 + 2) == n->dport);

    CHECK(pks_csum(a, l4, 0) == 0);
    if (get16(b + 10) != 0xffff)
        CHECK(get16(a + 10) == full_ip_csum(a, l4));

    if (m->partial) {
        CHECK(partial_residue(a, m) == partial_residue(b, m));
    } else {
        int ok_before = tcp_csum_ok(b, m);
        CHECK(tcp_csum_ok(a, m) == ok_before);
        if (ok_before && get16(b + l4 + 16) != 0xffff)
            CHECK(get16(a + l4 + 16) == full_tcp_csum(a, m));
    }

    pks_meta m2;
    CHECK(parse_mode(after, len, &m2, vnet) == PKS_OK);
    check_meta(a, len - h, &m2);
    CHECK(m2.hdr == m->hdr && m2.partial == m->partial);
    CHECK(m2.ip_len == m->ip_len && m2.l4_off == m->l4_off && m2.payload == m->payload);
    CHECK(m2.tcp_flags == m->tcp_flags);
}

/* ------------------------------------------------------------ table model */

/* a small universe of keys, so that operations collide and probe chains form */
static void small_key(uint8_t b, pks_key *k)
{
    memset(k, 0, sizeof *k);
    k->family = 4;
    k->proto = 6;
    k->sport = (uint16_t)(40000 + (b & 15));
    k->dport = 80;
    k->saddr[0] = 198;
    k->saddr[3] = (uint8_t)(b >> 4);
    k->daddr[0] = 203;
    k->daddr[3] = 10;
}

static void make_nat(const uint8_t *data, size_t size, uint32_t salt, pks_nat *n)
{
    uint8_t b[12];
    for (size_t i = 0; i < 12; i++)
        b[i] = (uint8_t)(data[i % size] ^ data[size - 1 - (i % size)] ^ (salt * 0x9d + i));
    memset(n, 0, sizeof *n);
    memcpy(n->saddr, b, 4);
    memcpy(n->daddr, b + 4, 4);
    n->sport = get16(b + 8);
    n->dport = get16(b + 10);
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

static int64_t model_find(const model *md, const pks_key *k)
{
    for (uint32_t i = 0; i < NSLOTS; i++)
        for (uint32_t d = 0; d < 2; d++)
            if (md->s[i].used && memcmp(&md->s[i].key[d], k, sizeof *k) == 0)
                return (int64_t)(i << 1 | d);
    return -1;
}

static void check_key(const model *md, const pks_key *k)
{
    CHECK(pks_table_lookup(md->t, k) == model_find(md, k));
}

/* the half-open list holds exactly the used SYN_RECV flows, linked both ways; every used
 * flow with a timer has exactly one live heap entry, the rest are counted stale; heap order */
static void check_lists(const model *md)
{
    const pks_table *t = md->t;
    uint32_t syn_recv = 0, timers = 0, n = 0, prev = PKS_NONE;
    for (uint32_t i = 0; i < NSLOTS; i++) {
        const pks_flow *f = &t->flows[i];
        syn_recv += f->used && f->state == PKS_S_SYN_RECV;
        timers += f->used && f->timer_seq != 0;
        CHECK(f->used || f->timer_seq == 0);
    }
    for (uint32_t s = t->ho_head; s != PKS_NONE; s = t->flows[s].next) {
        CHECK(s < NSLOTS && n < NSLOTS);
        CHECK(t->flows[s].used && t->flows[s].state == PKS_S_SYN_RECV);
        CHECK(t->flows[s].prev == prev);
        prev = s;
        n++;
    }
    CHECK(t->ho_tail == prev && n == syn_recv && t->half_open == syn_recv);
    uint32_t live = 0;
    for (uint32_t i = 0; i < t->heap_len; i++) {
        const pks_timer *e = &t->heap[i];
        CHECK(e->slot < NSLOTS);
        live += t->flows[e->slot].used && t->flows[e->slot].timer_seq == e->seq;
        if (i)
            CHECK(t->heap[(i - 1) / 2].due <= e->due);
    }
    CHECK(live == timers && t->stale == t->heap_len - live);
}

/* the free slots are the unused ones: each once in the list (below fresh), or fresh */
static void check_free(const pks_table *t)
{
    uint8_t seen[NSLOTS] = {0};
    uint32_t listed = 0;
    for (uint32_t s = t->free_head; s != PKS_NONE; s = t->flows[s].next) {
        CHECK(s < t->fresh && !t->flows[s].used && !seen[s] && listed < NSLOTS);
        seen[s] = 1;
        listed++;
    }
    CHECK(t->fresh <= t->nslots && listed + (t->nslots - t->fresh) + t->count == t->nslots);
}

static void check_table(const model *md, int full)
{
    uint32_t used = 0;
    for (uint32_t i = 0; i < NSLOTS; i++) {
        const model_slot *ms = &md->s[i];
        const pks_flow *f = &md->t->flows[i];
        CHECK(f->used == ms->used);
        if (!ms->used)
            continue;
        used++;
        for (uint32_t d = 0; d < 2; d++) {
            CHECK(pks_table_lookup(md->t, &ms->key[d]) == (int64_t)(i << 1 | d));
            if (full) {
                pks_nat n;
                pks_flow_nat(md->t, i, (uint8_t)d, &n);
                CHECK(memcmp(&f->key[d], &ms->key[d], sizeof f->key[d]) == 0);
                CHECK(memcmp(&n, &ms->nat[d], sizeof n) == 0);
            }
        }
    }
    CHECK(md->t->nkeys == 2 * used);
    check_free(md->t);
    check_lists(md);
    if (!full)
        return;
    /* the index holds exactly the keys of the used slots: so a key of no used slot (one never
     * inserted, or removed) cannot be found */
    uint32_t live = 0;
    for (uint32_t i = 0; i <= md->t->mask; i++) {
        uint32_t e = md->t->index[i];
        if (e == EMPTY_ENTRY)
            continue;
        live++;
        CHECK((e >> 1) < NSLOTS && md->s[e >> 1].used);
        const pks_key *k = &md->t->flows[e >> 1].key[e & 1];
        /* found from its home, so no empty cell lies between (the probing invariant) */
        CHECK(pks_table_lookup(md->t, k) == (int64_t)e);
    }
    CHECK(live == md->t->nkeys);
}

/* what pks_table_insert must return */
static int insert_rc(const model *md, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    if (slot >= NSLOTS || md->s[slot].used)
        return -2;
    if (model_find(md, k0) >= 0 || model_find(md, k1) >= 0 || memcmp(k0, k1, sizeof *k0) == 0)
        return -1;
    return 0;
}

/* what a direction of a flow is rewritten to: the other direction's key, reversed */
static void reverse_key(const pks_key *k, pks_nat *n)
{
    memset(n, 0, sizeof *n);
    memcpy(n->saddr, k->daddr, sizeof n->saddr);
    memcpy(n->daddr, k->saddr, sizeof n->daddr);
    n->sport = k->dport;
    n->dport = k->sport;
}

static void model_insert(model *md, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    model_slot *ms = &md->s[slot];
    memset(ms, 0, sizeof *ms);
    ms->used = 1;
    ms->key[0] = *k0;
    ms->key[1] = *k1;
    reverse_key(k1, &ms->nat[0]);
    reverse_key(k0, &ms->nat[1]);
    ms->state = (uint8_t)(slot * 3 % PKS_STATES); /* any state, as Python sets it */
    CHECK(pks_flow_set_state(md->t, slot, ms->state, 1.0) == 0);
}

/* the grid a graded table runs on: not IPVS's, but one where every cell differs by input */
static uint8_t grid_cell(uint32_t dir, uint32_t ev, uint32_t state)
{
    return (uint8_t)((state * 7 + ev * 3 + dir + 1) % PKS_STATES);
}

static void load_grid(pks_table *t)
{
    uint8_t grid[2 * 4 * PKS_STATES];
    for (uint32_t d = 0; d < 2; d++)
        for (uint32_t e = 0; e < 4; e++)
            for (uint32_t s = 0; s < PKS_STATES; s++)
                grid[(d * 4 + e) * PKS_STATES + s] = grid_cell(d, e, s);
    CHECK(pks_table_set_transitions(t, grid, sizeof grid) == 0);
    CHECK(pks_table_set_transitions(t, grid, sizeof grid - 1) == -1);
}

static void do_insert(model *md, uint32_t slot, const pks_key *k0, const pks_key *k1)
{
    int want = insert_rc(md, slot, k0, k1);
    CHECK(pks_table_insert(md->t, slot, k0, k1) == want);
    if (want == 0)
        model_insert(md, slot, k0, k1);
    check_key(md, k0);
    check_key(md, k1);
}

/* a flow for the packet (parsed into m) to `to`: packets like m's become `to`, the replies
 * to it the reverse of m's (the keys native_open inserts) */
static void do_flow_for(model *md, uint32_t slot, const pks_meta *m, const pks_nat *to)
{
    pks_key k1;
    memset(&k1, 0, sizeof k1);
    k1.family = 4;
    k1.proto = 6;
    memcpy(k1.saddr, to->daddr, 4);
    memcpy(k1.daddr, to->saddr, 4);
    k1.sport = to->dport;
    k1.dport = to->sport;
    do_insert(md, slot, &m->key, &k1);
}

/* --------------------------------------------------------------- packet path */

/* the key of the TCP packet an ICMP error quotes (at q, len bytes), reversed: the key of
 * the flow's packets the error is about. 0 when no such packet is quoted in full enough. */
static int quote_key(const uint8_t *q, uint32_t len, pks_key *k)
{
    if (len < 20 || q[0] >> 4 != 4)
        return 0;
    uint32_t ihl = (uint32_t)(q[0] & 0x0f) * 4;
    if (ihl < 20 || len < ihl + 8 || q[9] != PKS_PROTO_TCP)
        return 0;
    memset(k, 0, sizeof *k);
    k->family = 4;
    k->proto = PKS_PROTO_TCP;
    memcpy(k->saddr, q + 16, 4);
    memcpy(k->daddr, q + 12, 4);
    k->sport = get16(q + ihl + 2);
    k->dport = get16(q + ihl);
    return 1;
}

/* what a SYN's source may be (this table has no VIP or SNAT address): not 0/8, loopback,
 * multicast, 240/4 or broadcast */
static int model_source_ok(uint32_t src)
{
    uint32_t top = src >> 24;
    return top != 0 && top != 127 && top < 224;
}

/* the TCP checksum of the segment at ip (m's), with the pseudo-header, by the reference */
static int model_tcp_csum_ok(const uint8_t *ip, const pks_meta *m)
{
    uint32_t l4len = (uint32_t)m->ip_len - m->l4_off;
    uint32_t sum = get16(ip + 12) + get16(ip + 14) + get16(ip + 16) + get16(ip + 18)
                   + PKS_PROTO_TCP + l4len;
    return ref_csum(ip + m->l4_off, l4len, sum) == 0;
}

/* a <= b in serial number arithmetic (RFC 1982), as TCP compares sequence numbers */
static int serial_le(uint32_t a, uint32_t b) { return (int32_t)(b - a) >= 0; }

/* the quoted packet (at q) is of the way opposite to entry e's, and its sequence number is
 * in flight: from the other way's last ACK (or, with none, the first number before the end)
 * to the end of what it sent; never if it sent nothing */
static int model_in_flight(const pks_table *t, int64_t e, const uint8_t *q)
{
    const pks_flow *f = &t->flows[e >> 1];
    uint32_t way = (uint32_t)(e & 1), from = way ^ 1;
    uint32_t ihl = (uint32_t)(q[0] & 0x0f) * 4, seq = get32(q + ihl + 4);
    uint32_t end = f->seq_end[from];
    if (end == 0)
        return 0;
    uint32_t lo = f->acked[way] ? f->ack[way] : end - 1;
    return serial_le(lo, seq) && serial_le(seq, end);
}

/* Tracing (trace.c): with a buffer set, each decision of pks_process appends one record (or
 * counts one lost) that tells the verdict, reason, lengths and state move exactly and holds
 * the packet as it came and, forwarded, as it left; outside the checksum a partial sum is
 * finished in, every byte is the packet's. `used`, `lost`: the buffer and count before. */
static uint8_t trace_mem[4096] __attribute__((aligned(8)));

static void trace_on(pks_table *t, uint8_t knob)
{
    uint32_t snap = 40u + (uint32_t)(knob & 0x3f) * 8, cap = pks_trace_size(snap, snap);
    cap += (uint32_t)(knob >> 6) * cap;     /* room for 1 .. 4 records of snap bytes */
    CHECK(pks_trace_set(t, trace_mem + 1, cap, snap) == -1);    /* misaligned */
    CHECK(pks_trace_set(t, trace_mem, pks_trace_size(snap, snap) - 8, snap) == -1);
    CHECK(pks_trace_set(t, trace_mem, cap, snap) == 0);
}

static int same_but_csum(const uint8_t *a, const uint8_t *b, uint32_t n, uint32_t at, int partial)
{
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != b[i] && !(partial && (i == at || i == at + 1)))
            return 0;
    return 1;
}

static void check_trace(const pks_table *t, uint32_t used, uint64_t lost, const uint8_t *in,
                        const uint8_t *out, size_t size, int v, const pks_meta *pm, int vnet)
{
    if (!t->trace_cap)
        return;
    if (v == PKS_V_SLOW) {
        CHECK(t->trace_used == used && t->trace_lost == lost);
        return;
    }
    CHECK(t->trace_used <= t->trace_cap);
    uint32_t hdr = vnet ? PKS_VNET_HDR_LEN : 0, len = size > hdr ? (uint32_t)size - hdr : 0;
    if (t->trace_lost != lost) {
        CHECK(t->trace_lost == lost + 1 && t->trace_used == used);
        CHECK(t->trace_cap - used < pks_trace_size(len, t->trace_snap));
        return;
    }
    const pks_trace_rec *r = (const pks_trace_rec *)(t->trace_buf + used);
    uint32_t cap = len < t->trace_snap ? len : t->trace_snap;
    CHECK(used + r->size == t->trace_used);
    CHECK(r->len == len && r->cap == cap && r->verdict == v);
    CHECK(r->size == ((uint32_t)sizeof *r + cap * (v == PKS_V_FAST ? 2 : 1) + 7) / 8 * 8);
    CHECK(r->err == (v == PKS_V_DROP ? pm->err : 0));
    CHECK(memcmp(r->vnet, in, hdr < size ? hdr : size) == 0);
    uint32_t at = (uint32_t)pm->l4_off + 16;
    int partial = r->partial;
    CHECK(partial == (pm->partial && (pm->err == PKS_OK || pm->err >= PKS_E_NO_FLOW)));
    const uint8_t *copy = (const uint8_t *)(r + 1);
    CHECK(same_but_csum(copy, in + hdr, cap, at, partial));
    if (v == PKS_V_FAST)
        CHECK(same_but_csum(copy + cap, out + hdr, cap, at, partial));
    if (r->slot >= 0) {
        const pks_flow *f = &t->flows[r->slot];
        CHECK(r->slot == pm->slot && f->used && r->to == f->state);
        CHECK(r->service == f->service && r->backend == f->backend && r->has_client);
        CHECK(r->client_port == f->key[0].sport);
    } else {
        CHECK(r->from == r->to && r->service == PKS_NONE && r->backend == PKS_NONE);
    }
}

static void run_process(model *md, const uint8_t *data, size_t size, const pks_meta *m, int vnet)
{
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    memcpy(buf, data, size);
    pks_meta pm;
    uint32_t acks[NSLOTS][2];
    uint8_t syns[NSLOTS];
    double synack_at[NSLOTS];
    for (uint32_t i = 0; i < NSLOTS; i++) {
        memcpy(acks[i], md->t->flows[i].ack, sizeof acks[i]);
        syns[i] = md->t->flows[i].syns;
        synack_at[i] = md->t->flows[i].synack_at;
    }
    uint32_t used = md->t->trace_used;
    uint64_t lost = md->t->trace_lost;
    int v = pks_process(md->t, buf, (uint32_t)size, 2.5, &pm, vnet);
    check_trace(md->t, used, lost, data, buf, size, v, &pm, vnet);
    if (m->err != PKS_OK) {
        CHECK(v == PKS_V_DROP && pm.err == m->err && pm.slot == -1);
        CHECK(memcmp(buf, data, size) == 0);
        free(buf);
        return;
    }
    int64_t e = model_find(md, &m->key);
    if (m->key.proto != PKS_PROTO_TCP) {        /* ICMP: dropped with its reason, or an
                                                   error about a flow translated (this table
                                                   has no VIP to answer echoes for) */
        CHECK(pm.slot == -1 && (v == PKS_V_DROP || v == PKS_V_FAST));
        if (v == PKS_V_DROP) {
            CHECK((pm.err >= PKS_E_ICMP_CHECKSUM && pm.err <= PKS_E_ICMP_NO_FLOW)
                  || pm.err == PKS_E_ICMP_RATE || pm.err == PKS_E_ICMP_WINDOW);
            if (pm.err == PKS_E_ICMP_WINDOW) {  /* a known flow, and a quote not in flight */
                const uint8_t *was = data + m->hdr + m->l4_off + 8;
                pks_key about;
                CHECK(quote_key(was, m->ip_len - m->l4_off - 8, &about));
                int64_t e = model_find(md, &about);
                CHECK(e >= 0 && !model_in_flight(md->t, e, was));
            }
            CHECK(memcmp(buf, data, size) == 0);
        } else {
            const uint8_t *ip = buf + m->hdr, *quote = ip + m->l4_off + 8;
            uint32_t ihl = m->l4_off, qihl = (uint32_t)(quote[0] & 0x0f) * 4;
            CHECK(m->icmp_type != 8);
            CHECK(pks_csum(ip, ihl, 0) == 0 && pks_csum(quote, qihl, 0) == 0);
            CHECK(pks_csum(ip + ihl, m->ip_len - ihl, 0) == 0);
            CHECK(memcmp(buf, data, m->hdr + 10) == 0);  /* all before the IP checksum */
            CHECK(memcmp(buf + m->hdr + m->ip_len, data + m->hdr + m->ip_len,
                         size - m->hdr - m->ip_len) == 0);  /* and all past the packet */
            /* the error was about a packet the flow's way `w` rewrote (its quote, reversed,
             * is key[w]); its quote now is that packet as it arrived, a packet of the other
             * way (key[!w]) */
            const uint8_t *was = data + m->hdr + m->l4_off + 8;
            pks_key before, after;
            CHECK(quote_key(was, m->ip_len - m->l4_off - 8, &before));
            memset(&after, 0, sizeof after);
            after.family = 4;
            after.proto = PKS_PROTO_TCP;
            memcpy(after.saddr, quote + 12, 4);
            memcpy(after.daddr, quote + 16, 4);
            after.sport = get16(quote + qihl);
            after.dport = get16(quote + qihl + 2);
            int64_t e0 = model_find(md, &before), e1 = model_find(md, &after);
            CHECK(e0 >= 0 && e1 == (e0 ^ 1));
            CHECK(model_in_flight(md->t, e0, was));
        }
        free(buf);
        return;
    }
    uint32_t slot = (uint32_t)(e >> 1), dir = (uint32_t)(e & 1);
    uint8_t four = m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST | PKS_TCP_FIN);
    int reused = e >= 0 && dir == 0 && four == PKS_TCP_SYN
                 && (md->s[slot].state == PKS_S_TIME_WAIT || md->s[slot].state == PKS_S_CLOSE);
    if (e < 0 || reused) {  /* a new flow's packet: this table has no service, so C drops
                               it (no_flow, no_service), or leaves it without a grid */
        if (!md->t->has_trans)
            CHECK(v == PKS_V_SLOW && pm.slow == PKS_SLOW_NO_GRID);
        else if (four != PKS_TCP_SYN)
            CHECK(v == PKS_V_DROP && pm.err == PKS_E_NO_FLOW);
        else if (!model_source_ok(m->saddr4))
            CHECK(v == PKS_V_DROP && pm.err == PKS_E_BAD_SOURCE);
        else if (!m->partial && !model_tcp_csum_ok(data + m->hdr, m))
            CHECK(v == PKS_V_DROP && pm.err == PKS_E_TCP_CHECKSUM);
        else
            CHECK(v == PKS_V_DROP && pm.err == PKS_E_NO_SERVICE);
        CHECK(md->t->ev_count == 0);
        CHECK(memcmp(buf, data, size) == 0);
        if (reused) {
            const pks_flow *f = &md->t->flows[slot];
            CHECK(f->pkts[0] == md->s[slot].pkts[0] && f->pkts[1] == md->s[slot].pkts[1]);
        }
        free(buf);
        return;
    }
    CHECK(pm.err == PKS_OK && pm.hdr == m->hdr && pm.partial == m->partial);
    CHECK(pm.slot == (int32_t)slot && pm.dir == dir);
    const pks_flow *f = &md->t->flows[slot];
    const model_slot *ms = &md->s[slot];
    uint8_t syns_before = syns[slot];
    double synack_before = synack_at[slot];
    CHECK(f->pkts[dir] == ms->pkts[dir] + 1 && f->bytes[dir] == ms->bytes[dir] + m->ip_len);
    CHECK(f->pkts[dir ^ 1] == ms->pkts[dir ^ 1] && f->bytes[dir ^ 1] == ms->bytes[dir ^ 1]);
    CHECK(f->last_seen == 2.5);
    /* an ACK's acknowledgment number is remembered for its direction, nothing else changes */
    uint32_t ack = get32(data + m->hdr + m->l4_off + 8);
    CHECK(f->ack[dir] == (m->tcp_flags & PKS_TCP_ACK ? ack : acks[slot][dir]));
    CHECK(f->ack[dir ^ 1] == acks[slot][dir ^ 1]);
    /* C decides on every packet of a flow given a grid; without one, not on those with SYN,
     * FIN or RST */
    uint8_t stop = md->t->has_trans ? 0 : PKS_TCP_SYN | PKS_TCP_RST | PKS_TCP_FIN;
    uint8_t syn_ack_rst = m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST);
    int synack = md->t->has_trans && dir == 1 && syn_ack_rst == (PKS_TCP_SYN | PKS_TCP_ACK);
    int fast = !(m->tcp_flags & stop);
    uint8_t state = md->s[slot].state;
    uint8_t want = state;
    if (fast && md->t->has_trans) {         /* RST > SYN > FIN > ACK, as tcpstate.event_of */
        int ev = (m->tcp_flags & PKS_TCP_RST) ? 3 : (m->tcp_flags & PKS_TCP_SYN) ? 0
                 : (m->tcp_flags & PKS_TCP_FIN) ? 1 : (m->tcp_flags & PKS_TCP_ACK) ? 2 : -1;
        if (ev >= 0)
            want = grid_cell(dir, (uint32_t)ev, state);
    }
    /* a backend's RST before any SYN-ACK of the flow: the refusal, told first */
    int refused = fast && dir == 1 && (m->tcp_flags & PKS_TCP_RST) && synack_before < 0;
    if (fast && dir == 0 && (m->tcp_flags & PKS_TCP_SYN))
        CHECK(f->syns == (syns_before < 255 ? syns_before + 1 : 255));
    else
        CHECK(f->syns == syns_before);
    double req_before = md->s[slot].req_at;
    uint8_t measured_before = md->s[slot].measured;
    pks_event evs[4];
    uint32_t nev = pks_events_take(md->t, evs, 4);
    uint32_t k = 0;
    if (refused) {
        CHECK(k < nev && evs[k].kind == PKS_EV_REFUSED && evs[k].slot == slot);
        CHECK(evs[k].t == 2.5 && evs[k].dir == 1 && evs[k].from == state);
        k++;
    }
    CHECK(f->state == want);
    md->s[slot].state = want;
    if (fast && synack && !md->s[slot].synacked) {
        CHECK(k < nev && evs[k].kind == PKS_EV_SYNACK && evs[k].slot == slot);
        CHECK(evs[k].t == 2.5 && evs[k].dir == 1);
        md->s[slot].synacked = 1;
        k++;
    }
    if (fast && m->payload && !measured_before) {
        if (dir == 0) {
            md->s[slot].req_at = req_before == 0 ? 2.5 : req_before;
        } else if (req_before != 0) {
            CHECK(k < nev && evs[k].kind == PKS_EV_RESPONSE && evs[k].slot == slot);
            CHECK(evs[k].t == 2.5 && evs[k].value == 2.5 - req_before && evs[k].dir == 1);
            md->s[slot].measured = 1;
            k++;
        }
    }
    CHECK(k == nev);
    CHECK(f->req_at == md->s[slot].req_at && f->measured == md->s[slot].measured);
    CHECK(f->synacked == md->s[slot].synacked);
    if (fast) {
        CHECK(v == PKS_V_FAST);
    } else {
        CHECK(v == PKS_V_SLOW);
        CHECK(memcmp(buf, data, size) == 0);
        pks_apply(md->t, buf, &pm);
    }
    check_rewrite(data, buf, (uint32_t)size, m, &md->s[slot].nat[dir], vnet);
    free(buf);
}

/* (a) parse and (b) rewrite; returns the parse in *m */
static void parse_and_rewrite(const uint8_t *data, size_t size, pks_meta *m, int vnet)
{
    uint8_t *pkt = malloc(size);
    CHECK(pkt != NULL);
    memcpy(pkt, data, size);
    int err = parse_mode(pkt, (uint32_t)size, m, vnet);
    CHECK(err == m->err && err >= 0 && err < PKS_E_COUNT);
    CHECK(strcmp(pks_err_name(err), "unknown") != 0);
    CHECK(memcmp(pkt, data, size) == 0);
    if (vnet) { /* the header adds one error and one flag to what pks_parse says */
        pks_meta inner;
        if (size < PKS_VNET_HDR_LEN) {
            CHECK(err == PKS_E_VNET);
        } else if (pks_parse(pkt + PKS_VNET_HDR_LEN, (uint32_t)(size - PKS_VNET_HDR_LEN), &inner)
                   != PKS_OK) {
            CHECK(err == inner.err);
        } else if (data[0] & PKS_VNET_F_NEEDS_CSUM) {
            int start_ok = (data[6] | data[7] << 8) == inner.l4_off;
            int offset_ok = (data[8] | data[9] << 8) == 16;
            int tcp = inner.key.proto == PKS_PROTO_TCP;
            CHECK(err == (tcp && start_ok && offset_ok ? PKS_OK : PKS_E_VNET));
            CHECK(err != PKS_OK || m->partial == 1);
        } else {
            CHECK(err == PKS_OK && m->partial == 0);
        }
    }
    if (err != PKS_OK) {
        free(pkt);
        return;
    }
    uint32_t h = vnet ? PKS_VNET_HDR_LEN : 0;
    CHECK(m->hdr == h && m->partial == (vnet && (data[0] & PKS_VNET_F_NEEDS_CSUM)));
    if (m->key.proto == PKS_PROTO_ICMP) { /* Python's to handle: nothing to rewrite here */
        check_icmp_meta(pkt + h, (uint32_t)(size - h), m);
        free(pkt);
        return;
    }
    check_meta(pkt + h, (uint32_t)(size - h), m);

    pks_nat n;
    make_nat(data, size, 0, &n);
    pks_rewrite(pkt, m, &n);
    check_rewrite(data, pkt, (uint32_t)size, m, &n, vnet);

    /* and back: the reverse nat restores addresses and ports, and the checksums up to the
     * two encodings of zero */
    pks_nat back;
    memset(&back, 0, sizeof back);
    memcpy(back.saddr, data + h + 12, 4);
    memcpy(back.daddr, data + h + 16, 4);
    back.sport = m->key.sport;
    back.dport = m->key.dport;
    uint8_t *mid = malloc(size);
    CHECK(mid != NULL);
    memcpy(mid, pkt, size);
    pks_meta mm;
    CHECK(parse_mode(mid, (uint32_t)size, &mm, vnet) == PKS_OK);
    pks_rewrite(pkt, &mm, &back);
    check_rewrite(mid, pkt, (uint32_t)size, &mm, &back, vnet);
    uint32_t ic = h + 10, tc = h + m->l4_off + 16;
    for (uint32_t i = 0; i < size; i++)
        if (i != ic && i != ic + 1 && i != tc && i != tc + 1)
            CHECK(pkt[i] == data[i]);
    CHECK(same_csum(get16(pkt + ic), get16(data + ic)));
    CHECK(same_csum(get16(pkt + tc), get16(data + tc)));
    free(mid);
    free(pkt);
}

/* (c) a small table driven by the input, read backwards in 3-byte operations */
static void drive_table(const uint8_t *data, size_t size, const pks_meta *m, int vnet)
{
    model md;
    memset(&md, 0, sizeof md);
    md.t = pks_table_new(NSLOTS, (uint64_t)size * 0x9e3779b97f4a7c15ull ^ data[0]);
    CHECK(md.t != NULL);
    if (data[size - 1] & 0x80) /* half the inputs: C moves flows' states itself */
        load_grid(md.t);
    if (data[size - 1] & 0x20)                /* and traces, in a buffer of 1 .. 4 records */
        trace_on(md.t, data[size / 2]);
    double timeouts[PKS_STATES];
    for (uint32_t s = 0; s < PKS_STATES; s++) /* 0 .. 2.5 s, from the input */
        timeouts[s] = (double)((data[s % size] >> 4) % 6) * 0.5;
    CHECK(pks_table_set_timeouts(md.t, timeouts, PKS_STATES) == 0);
    timeouts[0] = -1;
    CHECK(pks_table_set_timeouts(md.t, timeouts, PKS_STATES) == -1);
    timeouts[0] = md.t->timeouts[0];
    check_table(&md, 1);
    size_t nops = size / 3 < MAX_OPS ? size / 3 : MAX_OPS;
    for (size_t i = 0; i < nops; i++) {
        const uint8_t *op = data + size - 3 * (i + 1);
        uint8_t code = op[0] & 3, arg = op[0] >> 2, a = op[1], b = op[2];
        pks_key k0, k1;
        pks_key quoted;             /* an ICMP error's quoted TCP packet, reversed */
        int icmp_quote = m->err == PKS_OK && m->key.proto == PKS_PROTO_ICMP
                         && quote_key(data + m->hdr + m->l4_off + 8,
                                      m->ip_len - m->l4_off - 8, &quoted);
        if (code == 3 && (m->err != PKS_OK || (m->key.proto != PKS_PROTO_TCP && !icmp_quote)))
            code = 0;
        switch (code) {
        case 0: /* insert two small keys; slots 8..15 are out of range */
            small_key(a, &k0);
            small_key(b, &k1);
            do_insert(&md, arg & 15, &k0, &k1);
            break;
        case 1: { /* remove */
            uint32_t slot = arg & 15;
            int want = slot < NSLOTS && md.s[slot].used ? 0 : -1;
            CHECK(pks_table_remove(md.t, slot) == want);
            if (want == 0) {
                model_slot gone = md.s[slot];
                memset(&md.s[slot], 0, sizeof md.s[slot]);
                CHECK(pks_table_lookup(md.t, &gone.key[0]) == -1);
                CHECK(pks_table_lookup(md.t, &gone.key[1]) == -1);
            }
            break;
        }
        case 2: /* lookups */
            small_key(a, &k0);
            check_key(&md, &k0);
            small_key(b, &k0);
            check_key(&md, &k0);
            if (m->err == PKS_OK)
                check_key(&md, &m->key);
            break;
        case 3: { /* a flow holding the packet's key: opened by it, or inserted in direction a & 1;
                   * for an ICMP error, a flow its quote is about */
            if (icmp_quote) {
                small_key(b, &k1);
                if (a & 1)
                    do_insert(&md, arg & 7, &k1, &quoted);
                else
                    do_insert(&md, arg & 7, &quoted, &k1);
                break;
            }
            pks_nat to;
            make_nat(data, size, (uint32_t)(2 * i + 1), &to);
            small_key(b, &k1);
            if (a & 4)
                do_flow_for(&md, arg & 7, m, &to);
            else if (a & 1)
                do_insert(&md, arg & 7, &k1, &m->key);
            else
                do_insert(&md, arg & 7, &m->key, &k1);
            break;
        }
        }
        check_table(&md, i % 8 == 7);
    }
    check_table(&md, 1);
    run_process(&md, data, size, m, vnet);
    check_table(&md, 1);
    /* expiry at rising times: a flow is returned exactly when it has been idle for its
     * timeout (earlier entries of flows seen since are pushed back), and once */
    uint32_t timed = 0;
    for (uint32_t i = 0; i < NSLOTS; i++)
        timed += md.t->flows[i].used && md.t->flows[i].timer_seq != 0;
    uint32_t gone = 0;
    for (double now = 0.5; now < 8; now += 0.5) {
        uint32_t due[NSLOTS + 1];
        uint32_t n = pks_expire(md.t, now, due, NSLOTS + 1);
        for (uint32_t i = 0; i < n; i++) {
            pks_flow *f = &md.t->flows[due[i]];
            CHECK(f->used && f->timer_seq == 0 && f->last_seen + f->timeout <= now);
            CHECK(pks_table_remove(md.t, due[i]) == 0);
            memset(&md.s[due[i]], 0, sizeof md.s[due[i]]);
        }
        gone += n;
        for (uint32_t i = 0; i < NSLOTS; i++) /* the rest have a timer, not yet due */
            if (md.t->flows[i].used)
                CHECK(md.t->flows[i].timer_seq && md.t->flows[i].timer_due > now);
        check_table(&md, 1);
    }
    CHECK(gone == timed && md.t->heap_len == 0 && md.t->stale == 0);
    pks_table_free(md.t);
}

/* ------------------------------------------------------------ new flows in C
 * The packet's service runs a program (1..4 members from the input: rr, wrr, lrt with their
 * state, a hash table, lc or wlc), with a small SNAT pool (or none: nat mode) and a small
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
} opens;

static const uint8_t HKEY[] = "pktswitch-sched";

static void check_opens(opens *o)
{
    pks_table *t = o->t;
    uint32_t used = 0, half = 0;
    for (uint32_t i = 0; i < NSLOTS; i++) {
        const pks_flow *f = &t->flows[i];
        if (!f->used)
            continue;
        used++;
        half += f->state == PKS_S_SYN_RECV;
        CHECK(pks_table_lookup(t, &f->key[0]) == (int64_t)(i << 1));
        CHECK(pks_table_lookup(t, &f->key[1]) == (int64_t)(i << 1 | 1));
        if (!o->pool)
            continue;
        CHECK(f->has_snat && f->backend < t->bk_cap && t->bk_ep[f->backend] != PKS_NONE);
        uint32_t pair = (uint32_t)(f->snat_port - o->pool->lo) * o->pool->naddrs + f->snat_addr;
        CHECK(f->snat_port >= o->pool->lo && pair < o->pool->size);
        for (uint32_t j = 0; j < i; j++) {  /* one flow per (endpoint, pair) */
            const pks_flow *g = &t->flows[j];
            if (g->used && t->bk_ep[g->backend] == t->bk_ep[f->backend])
                CHECK(g->snat_port != f->snat_port || g->snat_addr != f->snat_addr);
        }
    }
    CHECK(t->count == used && t->nkeys == 2 * used && t->half_open == half);
    check_free(t);
    for (uint32_t b = 0; b < 4; b++) {  /* each backend's load is its flows, recounted */
        uint32_t active = 0, inactive = 0;
        for (uint32_t i = 0; i < NSLOTS; i++) {
            const pks_flow *f = &t->flows[i];
            if (f->used && f->backend == b && f->state != PKS_S_NONE) {
                active += f->state == PKS_S_ESTABLISHED;
                inactive += f->state != PKS_S_ESTABLISHED;
            }
        }
        CHECK(t->bk_load[b].active == active && t->bk_load[b].inactive == inactive);
    }
    uint32_t n = 0;
    for (uint32_t s = t->ho_head; s != PKS_NONE; s = t->flows[s].next, n++)
        CHECK(s < NSLOTS && n < NSLOTS && t->flows[s].state == PKS_S_SYN_RECV);
    CHECK(n == half);
    if (o->pool) {
        uint32_t total = 0;
        for (uint32_t ep = 0; ep < o->pool->nq; ep++) {
            uint32_t mine = 0;
            for (uint32_t i = 0; i < NSLOTS; i++)
                mine += t->flows[i].used && t->bk_ep[t->flows[i].backend] == ep;
            CHECK(o->pool->q[ep].in_use == mine);
            CHECK(o->pool->q[ep].count <= o->pool->size && mine + o->pool->q[ep].count <= o->pool->size);
            total += mine;
        }
        CHECK(o->pool->in_use_total == total);
    }
    if (o->prog >= 0) {                 /* the program's state is what the picks made it */
        int64_t got[4];
        int64_t k = pks_service_state(t, 0x10007u, got, 4);
        CHECK(k >= 0 && memcmp(got, o->state, (size_t)k * sizeof got[0]) == 0);
    }
}

/* Python's removal of a flow: its SNAT pair back to the pool, the slot free */
static void python_remove(opens *o, uint32_t slot, double now)
{
    pks_flow *f = &o->t->flows[slot];
    if (f->has_snat)
        CHECK(pks_snat_release(o->pool, o->t->bk_ep[f->backend],
                               (uint32_t)(f->snat_port - o->pool->lo) * o->pool->naddrs
                                   + f->snat_addr, now) == 0);
    CHECK(pks_table_remove(o->t, slot) == 0);
}

/* service numbers above 16 bits, as a switch that has had many services gives */
#define SVC 0x10007u        /* the one programmed */
#define SVC_OTHER 0x10008u  /* one whose program is refused */
#define SVC_NONE 0x10009u   /* one never programmed */

static void take_events(opens *o)
{
    pks_event evs[8];
    uint32_t n;
    while ((n = pks_events_take(o->t, evs, 8)) > 0)
        for (uint32_t k = 0; k < n; k++) {
            const pks_event *e = &evs[k];
            CHECK(e->slot < NSLOTS && e->kind >= PKS_EV_RESPONSE && e->kind <= PKS_EV_REFUSED);
            if (e->kind == PKS_EV_OPEN) {
                o->opened++;
                CHECK(e->service == SVC);
            }
            if (e->kind == PKS_EV_END || e->kind == PKS_EV_EVICT) {
                o->ended++;
                if (e->kind == PKS_EV_EVICT)
                    CHECK(e->from == PKS_S_SYN_RECV);
                else
                    CHECK(e->from == PKS_S_TIME_WAIT || e->from == PKS_S_CLOSE);
            }
        }
}

static const int PROGS[8] = {PKS_PROG_RR, PKS_PROG_WRR, PKS_PROG_LRT, PKS_PROG_HASH,
                             PKS_PROG_LC, PKS_PROG_WLC, PKS_PROG_RR, PKS_PROG_HASH};

static void program(opens *o, const uint8_t *op, const pks_meta *m)
{
    pks_pick picks[4];
    uint32_t n = op[0] % 5;             /* 0: the program is forgotten (a service removed) */
    int prog = PROGS[op[0] >> 5 & 7];
    for (uint32_t k = 0; k < n; k++) {
        /* backend 3 has no SNAT endpoint: C leaves it to Python; members are distinct
         * backends, as a switch's are */
        uint8_t b = (op[1] + k) & 3;
        picks[k] = (pks_pick){.backend = b, .reason = PKS_NONE, .addr = 0xc0000201u + b,
                              .port = (uint16_t)(8080 + b),
                              .weight = (uint16_t)((op[0] + op[1] + k) & 3)};
    }
    CHECK(pks_service_run(o->t, SVC_OTHER, m->daddr4, m->dport, PKS_PROG_RR, picks, n, NULL, 1)
          == -1);                       /* rr without its state */
    CHECK(pks_service_run(o->t, SVC_NONE, m->daddr4, m->dport, PKS_PROG_LC, picks, n, NULL, 0)
          == (n ? 0 : -1));
    CHECK(n == 0 || pks_service_forget(o->t, SVC_NONE) == 0);
    memcpy(o->picks, picks, sizeof picks);
    o->n = n;
    o->size = 0;
    if (!n) {
        int had = o->prog >= 0;
        CHECK(pks_service_forget(o->t, SVC) == (had ? 0 : -1));
        o->prog = -1;
        return;
    }
    o->prog = prog;
    memset(o->state, 0, sizeof o->state);
    uint32_t nstate = 0;
    if (prog == PKS_PROG_RR) {
        o->state[0] = op[1] >> 4;       /* a turn past the members too */
        nstate = 1;
    } else if (prog == PKS_PROG_WRR) {
        for (uint32_t k = 0; k < n; k++)
            o->state[k] = (int8_t)(op[1] << k);
        nstate = n;
    } else if (prog == PKS_PROG_LRT) {
        o->state[0] = (int64_t)((uint64_t)op[1] * 0x9e3779b97f4a7c15ull);
        nstate = 1;
        for (uint32_t b = 0; b < 4; b++)
            CHECK(pks_backend_rt(o->t, b, b == (op[1] & 3) ? -1 : 0.001 * (b + op[0] % 3)) == 0);
    }
    if (prog == PKS_PROG_HASH) {        /* 1..8 slots, some empty */
        uint32_t *slots = o->slots, size = 1 + (op[0] >> 2 & 7);
        for (uint32_t k = 0; k < size; k++)
            slots[k] = (op[1] >> k & 1) ? PKS_NONE : (k + op[0]) % n;
        o->size = size;
        o->with_port = op[1] & 1;
        CHECK(pks_service_hash(o->t, SVC, m->daddr4, m->dport, picks, n, slots, size,
                               (int)o->with_port) == 0);
        uint32_t bad[8];
        memcpy(bad, slots, sizeof bad);
        bad[0] = n;                     /* a slot past the members is refused */
        CHECK(pks_service_hash(o->t, SVC_OTHER, m->daddr4, m->dport, picks, n, bad, size, 0)
              == -1);
    } else {
        CHECK(pks_service_run(o->t, SVC, m->daddr4, m->dport, prog, picks, n, o->state, nstate)
              == 0);
    }
    /* an access list (as the switch writes it after each program): none, or a prefix of
     * 0..32 bits around the client or beside it (its top bit flipped), to allow or to deny;
     * or that prefix allowed and the client's own address denied */
    o->refused = 0;
    uint32_t bits = (op[0] >> 2) % 33, mask = bits ? ~0u << (32 - bits) : 0;
    int beside = (op[1] & 0x20) && bits, inside = !beside;
    uint32_t acl[4] = {(m->saddr4 ^ (beside ? 0x80000000u : 0)) & mask, mask, m->saddr4, ~0u};
    int has = op[1] & 0x40, deny = op[1] & 0x10, both = op[1] & 0x08;
    if (has && both) {
        CHECK(pks_service_acl(o->t, SVC, acl, 1, 1) == 0);
        o->refused = 1;                 /* deny wins */
    } else {
        CHECK(pks_service_acl(o->t, SVC, acl, has && !deny, has && deny) == 0);
        o->refused = has && (deny ? inside : !inside);
    }
    CHECK(pks_service_acl(o->t, SVC_NONE, NULL, 0, 0) == -1);  /* no such service */
}

/* The events one SYN C opened a flow for wrote, from ring position `from` on: the END of
 * the flow whose port it reused (if any), its OPEN, then the EVICT of each flow it ended to
 * make room; the OPEN's position is returned. */
static uint32_t check_open_events(const opens *o, uint32_t from, uint32_t slot)
{
    const pks_table *t = o->t;
    uint32_t n = t->ev_count - from, at = 0;
    CHECK(n >= 1);
    const pks_event *first = &t->events[(t->ev_head + from) % PKS_EVENTS];
    if (first->kind == PKS_EV_END)
        at = 1;
    CHECK(at < n);
    const pks_event *open = &t->events[(t->ev_head + from + at) % PKS_EVENTS];
    CHECK(open->kind == PKS_EV_OPEN && open->slot == slot);
    for (uint32_t i = at + 1; i < n; i++)
        CHECK(t->events[(t->ev_head + from + i) % PKS_EVENTS].kind == PKS_EV_EVICT);
    return from + at;
}

/* lc, wlc: no member with a weight had less load than the one C gave the new flow in
 * `slot` (its load counted without that flow, and with the half-open flows it evicted,
 * whose EVICTs follow its OPEN: C picks before it evicts; the flow whose port it reused is
 * gone already, as C picks after it), nor as little and listed before it */
static void check_least(const opens *o, uint32_t slot, uint32_t from)
{
    const pks_table *t = o->t;
    const pks_flow *f = &t->flows[slot];
    uint32_t act[4] = {0}, other[4] = {0};      /* each backend's flows at the pick */
    for (uint32_t i = 0; i < NSLOTS; i++) {
        const pks_flow *g = &t->flows[i];
        if (i != slot && g->used && g->state != PKS_S_NONE)
            (g->state == PKS_S_ESTABLISHED ? act : other)[g->backend]++;
    }
    uint32_t at = check_open_events(o, from, slot);
    for (uint32_t i = at + 1; i < t->ev_count; i++)
        other[t->events[(t->ev_head + i) % PKS_EVENTS].backend]++;  /* evicted, half-open */
    uint64_t load[4];
    for (uint32_t b = 0; b < 4; b++)
        load[b] = (uint64_t)act[b] * PKS_ACTIVE_WEIGHT + other[b];
    uint32_t chosen = o->n;
    for (uint32_t k = 0; k < o->n && chosen == o->n; k++)
        if (o->picks[k].weight && o->picks[k].backend == f->backend)
            chosen = k;
    CHECK(chosen < o->n && f->reason == PKS_NONE);
    const pks_pick *c = &o->picks[chosen];
    int lc = o->prog == PKS_PROG_LC;
    /* member p's load is above q's (per weight for wlc), or equal and p listed after q */
#define AFTER(p, q) (load[o->picks[p].backend] * (lc ? 1 : o->picks[q].weight) \
                     > load[o->picks[q].backend] * (lc ? 1 : o->picks[p].weight) \
                     || (load[o->picks[p].backend] * (lc ? 1 : o->picks[q].weight) \
                         == load[o->picks[q].backend] * (lc ? 1 : o->picks[p].weight) && (p) > (q)))
    for (uint32_t k = 0; k < o->n; k++)
        if (o->picks[k].weight && o->picks[k].backend != c->backend)
            CHECK(AFTER(k, chosen));
    /* the OPEN event: the runner-up, least loaded after the chosen, and both one's counts */
    const pks_event *e = &t->events[(t->ev_head + at) % PKS_EVENTS];
    CHECK(e->data.least.active[0] == act[c->backend]);
    CHECK(e->data.least.inactive[0] == other[c->backend]);
    uint32_t up = 0;
    for (uint32_t k = 0; k < o->n; k++)
        up += o->picks[k].weight != 0;
    if (up == 1) {
        CHECK(e->value == (double)PKS_NONE);
        return;
    }
    uint32_t r = (uint32_t)e->value;
    CHECK(e->value == (double)r && r < o->n && r != chosen && o->picks[r].weight);
    CHECK(e->data.least.active[1] == act[o->picks[r].backend]);
    CHECK(e->data.least.inactive[1] == other[o->picks[r].backend]);
    for (uint32_t k = 0; k < o->n; k++)
        if (o->picks[k].weight && k != chosen && k != r)
            CHECK(AFTER(k, r));
#undef AFTER
}

/* a hashed service: the member the client's slot names, and the slot (C's, from scratch) */
static void check_hashed(const opens *o, const pks_flow *f, uint32_t slot_, uint32_t from)
{
    uint8_t hk[6];
    const pks_key *k = &f->key[0];
    memcpy(hk, k->saddr, 4);
    hk[4] = (uint8_t)(k->sport >> 8);
    hk[5] = (uint8_t)k->sport;
    uint64_t h = pks_hash64(HKEY, sizeof HKEY - 1, hk, o->with_port ? 6 : 4);
    uint32_t slot = (uint32_t)(h % o->size);
    CHECK(o->slots[slot] != PKS_NONE);
    CHECK(f->backend == o->picks[o->slots[slot]].backend && f->reason == PKS_NONE);
    uint32_t at = check_open_events(o, from, slot_);
    const pks_event *e = &o->t->events[(o->t->ev_head + at) % PKS_EVENTS];
    CHECK(e->kind == PKS_EV_OPEN && e->value == (double)slot);
}

/* the model's splitmix64, written out apart from C's */
static uint64_t model_splitmix(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double model_score(const opens *o, uint32_t k)
{
    const pks_load *l = &o->t->bk_load[o->picks[k].backend];
    return l->rt < 0 ? 0.0 : l->rt * (double)(l->active + 1) / (double)o->picks[k].weight;
}

/* rr, wrr, lrt: the member the program's state (the model's) names for the next flow, its
 * OPEN event's value, and the state after it; -1: no member has a weight. For lrt the
 * scores are read before the flow is counted (the caller passes them). */
static int64_t model_pick(const opens *o, int64_t *state, double *value, const double *score)
{
    uint32_t n = o->n, up = 0;
    for (uint32_t k = 0; k < n; k++)
        up += o->picks[k].weight != 0;
    if (!up)
        return -1;
    if (o->prog == PKS_PROG_RR) {
        for (uint32_t i = 0;; i++) {
            uint32_t j = (uint32_t)(((uint64_t)state[0] + i) % n);
            if (o->picks[j].weight) {
                state[0] = (j + 1) % n;
                *value = j;
                return j;
            }
        }
    }
    if (o->prog == PKS_PROG_WRR) {
        int64_t total = 0;
        uint32_t best = n;
        for (uint32_t k = 0; k < n; k++) {
            if (!o->picks[k].weight)
                continue;
            state[k] += o->picks[k].weight;
            total += o->picks[k].weight;
            if (best == n || state[k] > state[best])
                best = k;
        }
        *value = (double)state[best];
        state[best] -= total;
        return best;
    }
    uint32_t ups[4], u = 0;
    for (uint32_t k = 0; k < n; k++)
        if (o->picks[k].weight)
            ups[u++] = k;
    uint32_t a = ups[0], b = a;
    if (up > 1) {
        uint64_t r = (uint64_t)state[0];
        uint32_t x = (uint32_t)(model_splitmix(&r) % up), y = (uint32_t)(model_splitmix(&r) % (up - 1));
        state[0] = (int64_t)r;
        a = ups[x];
        b = ups[y >= x ? y + 1 : y];
        if (score[b] < score[a]) {
            uint32_t t = a;
            a = b;
            b = t;
        }
    }
    *value = (double)a * PKS_MEMBERS_MAX + b;
    return a;
}

static void drive_opens(const uint8_t *data, size_t size, const pks_meta *m, int vnet)
{
    if (m->err != PKS_OK || m->key.proto != PKS_PROTO_TCP || m->key.family != 4 || size < 8)
        return;
    opens o;
    memset(&o, 0, sizeof o);
    o.prog = -1;
    o.t = pks_table_new(NSLOTS, data[1]);
    CHECK(o.t != NULL);
    if (data[size - 3] & 0x10)      /* and traces */
        trace_on(o.t, data[2]);
    load_grid(o.t);
    double timeouts[PKS_STATES];
    for (uint32_t st = 0; st < PKS_STATES; st++)
        timeouts[st] = (double)(data[st % size] % 4);
    CHECK(pks_table_set_timeouts(o.t, timeouts, PKS_STATES) == 0);
    CHECK(pks_table_set_hash_key(o.t, HKEY, sizeof HKEY - 1) == 0);
    CHECK(pks_table_set_backends(o.t, 4) == 0);     /* backends 0..3, their loads counted */
    /* the set-up from the input's last bytes (the packet's first ones must parse) */
    uint8_t cfg = data[size - 1], cfg2 = data[size - 2];
    o.t->max_half_open = 1 + cfg2 % NSLOTS;
    uint32_t addrs[2] = {0xcb007101u, 0xcb007102u};
    if (!(cfg & 1)) {                   /* full NAT, 1-2 addresses x 1-4 ports */
        o.pool = pks_snat_new(1 + (cfg >> 1 & 1), 1024, 1024 + (cfg >> 2 & 3));
        CHECK(o.pool != NULL);
        CHECK(pks_table_set_snat(o.t, o.pool, addrs, o.pool->naddrs) == 0);
        for (uint32_t ep = 0; ep < 3; ep++)
            CHECK(pks_snat_add(o.pool, ep, cfg2 + ep) == 0);
        for (uint32_t b = 0; b < 3; b++)
            CHECK(pks_table_set_endpoint(o.t, b, b) == 0);
    }
    const uint8_t first[2] = {(uint8_t)(1 + (cfg >> 4) % 4 + (cfg & 0xe0)), (uint8_t)(cfg2 ^ cfg)};
    program(&o, first, m);
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    double now = 1.0;
    size_t nops = size / 2 < MAX_OPS ? size / 2 : MAX_OPS;
    for (size_t i = 0; i < nops; i++) {
        const uint8_t *op = data + size - 2 * (i + 1);
        now += 0.25;
        switch (op[0] & 7) {
        case 0: case 1: case 2: {   /* a client SYN from port op[1] % 4, or another packet */
            memcpy(buf, data, size);
            uint8_t *th = buf + m->hdr + m->l4_off;
            th[0] = 0;
            th[1] = (uint8_t)(1 + op[1] % 4);
            th[13] = (op[0] & 7) == 2 ? (uint8_t)(op[1] >> 2) : PKS_TCP_SYN;
            if (!m->partial) {      /* a valid TCP checksum, or (op[0] & 0x80) a wrong one */
                const uint8_t *ip = buf + m->hdr;
                uint32_t l4len = (uint32_t)m->ip_len - m->l4_off;
                uint32_t sum = get16(ip + 12) + get16(ip + 14) + get16(ip + 16)
                               + get16(ip + 18) + PKS_PROTO_TCP + l4len;
                th[16] = th[17] = 0;
                uint16_t c = pks_csum(th, l4len, sum);
                th[16] = (uint8_t)(c >> 8);
                th[17] = (uint8_t)(c ^ (op[0] & 0x80 ? 1 : 0));
            }
            pks_meta pm;
            uint32_t opened = o.t->opened, count = o.t->count, from = o.t->ev_count;
            double score[4] = {0};
            for (uint32_t k = 0; k < o.n; k++)
                score[k] = o.picks[k].weight ? model_score(&o, k) : 0;
            uint32_t used = o.t->trace_used;
            uint64_t lost = o.t->trace_lost;
            uint8_t *came = malloc(size);
            CHECK(came != NULL);
            memcpy(came, buf, size);
            int v = pks_process(o.t, buf, (uint32_t)size, now, &pm, vnet);
            CHECK(v == PKS_V_FAST || v == PKS_V_SLOW || v == PKS_V_DROP);
            check_trace(o.t, used, lost, came, buf, size, v, &pm, vnet);
            free(came);
            if (o.t->trace_used > o.t->trace_cap / 2)
                o.t->trace_used = 0;            /* as Python takes the records */
            if (o.refused && th[13] == PKS_TCP_SYN)
                CHECK(o.t->opened == opened);   /* a refused client's SYN opens nothing */
            if (o.t->opened != opened) {    /* C opened a flow for it */
                CHECK(o.t->opened == opened + 1 && v == PKS_V_FAST && pm.slot >= 0);
                CHECK(o.t->flows[pm.slot].state == PKS_S_SYN_RECV);
                CHECK(o.t->flows[pm.slot].service == SVC);
                uint32_t at = check_open_events(&o, from, (uint32_t)pm.slot);
                uint32_t ended = o.t->ev_count - from - 1;  /* END and EVICTs */
                CHECK(o.t->count + ended == count + 1);
                const pks_flow *f = &o.t->flows[pm.slot];
                const pks_event *e = &o.t->events[(o.t->ev_head + at) % PKS_EVENTS];
                if (o.prog == PKS_PROG_HASH)
                    check_hashed(&o, f, (uint32_t)pm.slot, from);
                else if (o.prog == PKS_PROG_LC || o.prog == PKS_PROG_WLC)
                    check_least(&o, (uint32_t)pm.slot, from);
                else {                      /* rr, wrr, lrt: the model's pick */
                    double value = -1;
                    int64_t k = model_pick(&o, o.state, &value, score);
                    CHECK(k >= 0 && f->backend == o.picks[k].backend && e->value == value);
                    if (o.prog == PKS_PROG_LRT) {
                        uint32_t other = (uint32_t)value % PKS_MEMBERS_MAX;
                        const pks_load *la = &o.t->bk_load[o.picks[k].backend];
                        const pks_load *lb = &o.t->bk_load[o.picks[other].backend];
                        CHECK(e->data.lrt.rt[0] == la->rt && e->data.lrt.rt[1] == lb->rt);
                        /* (the flows opened and ended for this SYN are not ESTABLISHED) */
                        CHECK(e->data.lrt.active[0] == la->active);
                        CHECK(e->data.lrt.active[1] == lb->active);
                    }
                }
            } else if (v == PKS_V_DROP && pm.err >= PKS_E_NO_FLOW) {
                CHECK(o.t->count == count && o.t->ev_count == from);  /* nothing changed */
            }
            break;
        }
        case 3: {                   /* Python moves a flow's state */
            uint32_t slot = op[1] % NSLOTS;
            int want = o.t->flows[slot].used ? 0 : -1;
            CHECK(pks_flow_set_state(o.t, slot, (uint8_t)((op[1] >> 3) % PKS_STATES), now)
                  == want);
            break;
        }
        case 4: {                   /* expiry, and Python removes what is due */
            uint32_t due[NSLOTS + 1];
            uint32_t n = pks_expire(o.t, now + op[1] % 4, due, NSLOTS + 1);
            for (uint32_t k = 0; k < n; k++)
                python_remove(&o, due[k], now);
            if (o.pool && op[1] & 0x80) {   /* an endpoint's queue dropped, and added again */
                uint32_t ep = (op[1] >> 2) % 3;
                double at = now + (op[0] & 0x40 ? 61 : 30);
                const pks_snatq *q = &o.pool->q[ep];
                double last = 0;            /* the latest release, from the ring itself */
                for (uint32_t k = 0; k < q->count; k++)
                    if (q->times[(q->head + k) % q->cap] > last)
                        last = q->times[(q->head + k) % q->cap];
                int idle = !q->in_use, recent = q->count && at - last < PKS_TIME_WAIT;
                int rc = pks_snat_drop(o.pool, ep, at);
                CHECK(rc == (!idle ? -1 : recent ? -2 : 0));
                if (rc == 0) {
                    CHECK(!o.pool->q[ep].live && pks_snat_alloc(o.pool, ep, now) == -1);
                    CHECK(pks_snat_add(o.pool, ep, op[0]) == 0);
                }
            }
            break;
        }
        case 5:                     /* Python removes a flow */
            if (o.t->flows[op[1] % NSLOTS].used)
                python_remove(&o, op[1] % NSLOTS, now);
            break;
        case 6:
            take_events(&o);
            break;
        case 7:
            program(&o, op, m);
            break;
        }
        check_opens(&o);
    }
    take_events(&o);
    CHECK(o.opened == o.t->opened);
    free(buf);
    pks_table_free(o.t);
    pks_snat_free(o.pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65535 + PKS_VNET_HDR_LEN)
        return 0;

    /* pks_csum against the reference, from zero and from a partial sum */
    uint8_t *copy = malloc(size);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    uint32_t seed_sum = (uint32_t)data[0] * 0x10101u;
    CHECK(pks_csum(copy, (uint32_t)size, 0) == ref_csum(copy, (uint32_t)size, 0));
    CHECK(pks_csum(copy, (uint32_t)size, seed_sum) == ref_csum(copy, (uint32_t)size, seed_sum));
    free(copy);

    /* every input twice: as a bare IP packet, and as one behind a virtio_net_hdr */
    for (int vnet = 0; vnet < 2; vnet++) {
        pks_meta m;
        parse_and_rewrite(data, size, &m, vnet);
        drive_table(data, size, &m, vnet);
        drive_opens(data, size, &m, vnet);
    }
    return 0;
}
