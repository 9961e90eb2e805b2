/* pks_process on the packet against the model: state moves, events, ICMP, the trace. */
#include "fuzz.h"

/* --------------------------------------------------------------- packet path */

/* the key of the TCP or UDP packet an ICMP error quotes (at q, len bytes), reversed: the key
 * of the flow's packets the error is about. 0 when no such packet is quoted in full enough. */
int quote_key(const uint8_t *q, uint32_t len, pks_key *k)
{
    if (len < 20 || q[0] >> 4 != 4)
        return 0;
    uint32_t ihl = (uint32_t)(q[0] & 0x0f) * 4;
    if (ihl < 20 || len < ihl + 8 || (q[9] != PKS_PROTO_TCP && q[9] != PKS_PROTO_UDP))
        return 0;
    memset(k, 0, sizeof *k);
    k->family = 4;
    k->proto = q[9];
    memcpy(k->saddr, q + 16, 4);
    memcpy(k->daddr, q + 12, 4);
    k->sport = get16(q + ihl + 2);
    k->dport = get16(q + ihl);
    return 1;
}

/* what a SYN's source may be (this table has no VIP or SNAT address): not 0/8, loopback,
 * multicast, 240/4 or broadcast */
int model_source_ok(uint32_t src)
{
    uint32_t top = src >> 24;
    return top != 0 && top != 127 && top < 224;
}

/* the TCP or UDP checksum of the segment at ip (m's), with the pseudo-header, by the
 * reference (a UDP checksum of 0: none, right) */
int model_l4_csum_ok(const uint8_t *ip, const pks_meta *m)
{
    if (m->key.proto == PKS_PROTO_UDP && get16(ip + m->l4_off + 6) == 0)
        return 1;
    uint32_t l4len = l4_covered(ip, m);
    uint32_t sum = get16(ip + 12) + get16(ip + 14) + get16(ip + 16) + get16(ip + 18)
                   + m->key.proto + l4len;
    return ref_csum(ip + m->l4_off, l4len, sum) == 0;
}

/* a <= b in serial number arithmetic (RFC 1982), as TCP compares sequence numbers */
int serial_le(uint32_t a, uint32_t b) { return (int32_t)(b - a) >= 0; }

/* the quoted packet (at q) is of the way opposite to entry e's, and its sequence number is
 * in flight: from the other way's last ACK (or, with none, the first number before the end)
 * to the end of what it sent; never if it sent nothing */
int model_in_flight(const pks_table *t, int64_t e, const uint8_t *q)
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

void trace_on(pks_table *t, uint8_t knob)
{
    uint32_t snap = 40u + (uint32_t)(knob & 0x3f) * 8, cap = pks_trace_size(snap, snap);
    cap += (uint32_t)(knob >> 6) * cap;     /* room for 1 .. 4 records of snap bytes */
    CHECK(pks_trace_set(t, trace_mem + 1, cap, snap) == -1);    /* misaligned */
    CHECK(pks_trace_set(t, trace_mem, pks_trace_size(snap, snap) - 8, snap) == -1);
    CHECK(pks_trace_set(t, trace_mem, cap, snap) == 0);
}

int same_but_csum(const uint8_t *a, const uint8_t *b, uint32_t n, uint32_t at, int partial)
{
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != b[i] && !(partial && (i == at || i == at + 1)))
            return 0;
    return 1;
}

void check_trace(const pks_table *t, uint32_t used, uint64_t lost, const uint8_t *in,
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
    uint32_t out_len = v == PKS_V_FAST ? pm->ip_len : 0;
    uint32_t out_cap = out_len < t->trace_snap ? out_len : t->trace_snap;
    CHECK(r->out_len == out_len && r->out_cap == out_cap);
    CHECK(r->size == ((uint32_t)sizeof *r + cap + out_cap + 7) / 8 * 8);
    CHECK(r->err == (v == PKS_V_DROP ? pm->err : 0));
    CHECK(memcmp(r->vnet, in, hdr < size ? hdr : size) == 0);
    /* the packet as it came (a packet C answers with its own may differ in all but length) */
    pks_meta im;
    int came = (vnet ? pks_parse_vnet(in, (uint32_t)size, &im) : pks_parse(in, (uint32_t)size, &im))
               == PKS_OK;
    int partial = r->partial;
    CHECK(partial == (came && im.partial));
    const uint8_t *copy = (const uint8_t *)(r + 1);
    CHECK(same_but_csum(copy, in + hdr, cap, (uint32_t)im.l4_off + csum_at(&im), partial));
    if (v == PKS_V_FAST)        /* (finished where the packet left partial too) */
        CHECK(same_but_csum(copy + cap, out + hdr, out_cap, (uint32_t)pm->l4_off + csum_at(pm),
                            partial && pm->partial));
    if (r->slot >= 0) {
        const pks_flow *f = &t->flows[r->slot];
        CHECK(r->slot == pm->slot && f->used && r->to == f->state);
        CHECK(r->service == f->service && r->backend == f->backend && r->has_client);
        CHECK(r->client_port == f->key[0].sport);
    } else {
        CHECK(r->from == r->to && r->service == PKS_NONE && r->backend == PKS_NONE);
    }
}

void run_process(model *md, const uint8_t *data, size_t size, const pks_meta *m, int vnet)
{
    uint8_t *buf = malloc(size);
    CHECK(buf != NULL);
    memcpy(buf, data, size);
    pks_meta pm;
    /* the packet's flow, if any, with a window both ways from the input (or none) */
    int64_t known = m->err == PKS_OK && m->key.proto == PKS_PROTO_TCP ? model_find(md, &m->key)
                                                                      : -1;
    pks_flow was;
    memset(&was, 0, sizeof was);
    if (known >= 0) {
        window_setup(&md->t->flows[known >> 1], (uint8_t)(known & 1), data, size, m);
        was = md->t->flows[known >> 1];
    }
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
    if (m->key.proto == PKS_PROTO_ICMP) {       /* ICMP: dropped with its reason, or an
                                                   error about a flow translated (this table
                                                   has no VIP to answer echoes for) */
        CHECK(pm.slot == -1 && (v == PKS_V_DROP || v == PKS_V_FAST));
        if (v == PKS_V_DROP) {
            CHECK((pm.err >= PKS_E_ICMP_CHECKSUM && pm.err <= PKS_E_ICMP_NO_FLOW)
                  || pm.err == PKS_E_ICMP_RATE || pm.err == PKS_E_ICMP_WINDOW
                  || pm.err == PKS_E_ICMP_ADDRESS);
            if (pm.err == PKS_E_ICMP_ADDRESS)   /* not sent back to the quote's source */
                CHECK(memcmp(data + m->hdr + 16, data + m->hdr + m->l4_off + 8 + 12, 4) != 0);
            if (pm.err == PKS_E_ICMP_WINDOW) {  /* a known flow, and a quote not in flight */
                const uint8_t *was = data + m->hdr + m->l4_off + 8;
                pks_key about;
                CHECK(quote_key(was, m->ip_len - m->l4_off - 8, &about));
                int64_t e = model_find(md, &about);
                CHECK(e >= 0 && was[9] == PKS_PROTO_TCP && !model_in_flight(md->t, e, was));
            }
            CHECK(memcmp(buf, data, size) == 0);
        } else {
            const uint8_t *ip = buf + m->hdr, *quote = ip + m->l4_off + 8;
            uint32_t ihl = m->l4_off, qihl = (uint32_t)(quote[0] & 0x0f) * 4;
            CHECK(m->icmp_type != 8);
            CHECK(memcmp(data + m->hdr + 16, data + m->hdr + ihl + 8 + 12, 4) == 0);
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
            CHECK(was[9] == PKS_PROTO_UDP || model_in_flight(md->t, e0, was));
        }
        free(buf);
        return;
    }
    uint32_t slot = (uint32_t)(e >> 1), dir = (uint32_t)(e & 1);
    uint8_t four = m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST | PKS_TCP_FIN);
    int reused = e >= 0 && dir == 0 && four == PKS_TCP_SYN
                 && (md->s[slot].state == PKS_S_TIME_WAIT || md->s[slot].state == PKS_S_CLOSE);
    int udp = m->key.proto == PKS_PROTO_UDP;
    if (e < 0 || reused) {  /* a new flow's packet: this table has no service, so C drops
                               it (no_flow, no_service), or leaves a TCP one without a grid */
        if (!udp && !md->t->has_trans)
            CHECK(v == PKS_V_SLOW && pm.slow == PKS_SLOW_NO_GRID);
        else if (!udp && four != PKS_TCP_SYN)
            CHECK(v == PKS_V_DROP && pm.err == PKS_E_NO_FLOW);
        else if (!model_source_ok(m->saddr4))
            CHECK(v == PKS_V_DROP && pm.err == PKS_E_BAD_SOURCE);
        else if (!m->partial && !model_l4_csum_ok(data + m->hdr, m))
            CHECK(v == PKS_V_DROP && pm.err == (udp ? PKS_E_UDP_CHECKSUM : PKS_E_TCP_CHECKSUM));
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
    const uint8_t *th = data + m->hdr + m->l4_off;
    int moves = 0, werr = 0;    /* (a UDP flow has no window) */
    if (!udp) {
        moves = 1;
        werr = window_expect(&was, (uint8_t)dir, m, th, &moves);
    }
    if (werr) {                 /* out of the window: dropped, and nothing of the flow moves */
        CHECK(v == PKS_V_DROP && pm.err == werr && pm.slot == (int32_t)slot);
        CHECK(memcmp(buf, data, size) == 0);
        CHECK(memcmp(&md->t->flows[slot], &was, sizeof was) == 0);
        CHECK(md->t->ev_count == 0);
        free(buf);
        return;
    }
    CHECK(pm.err == PKS_OK && pm.hdr == m->hdr && pm.partial == m->partial);
    CHECK(pm.slot == (int32_t)slot && pm.dir == dir);
    if (moves) {
        window_after(&was, &md->t->flows[slot], (uint8_t)dir, m, th);
    } else {                    /* passed on, and the flow's sequence numbers stay */
        const pks_flow *g = &md->t->flows[slot];
        CHECK(memcmp(g->seq_end, was.seq_end, sizeof was.seq_end) == 0);
        CHECK(memcmp(g->maxend, was.maxend, sizeof was.maxend) == 0);
        CHECK(memcmp(g->maxwin, was.maxwin, sizeof was.maxwin) == 0);
        CHECK(memcmp(g->ack, was.ack, sizeof was.ack) == 0 && g->win_known == was.win_known);
    }
    const pks_flow *f = &md->t->flows[slot];
    const model_slot *ms = &md->s[slot];
    uint8_t syns_before = syns[slot];
    double synack_before = synack_at[slot];
    CHECK(f->pkts[dir] == ms->pkts[dir] + 1 && f->bytes[dir] == ms->bytes[dir] + m->ip_len);
    CHECK(f->pkts[dir ^ 1] == ms->pkts[dir ^ 1] && f->bytes[dir ^ 1] == ms->bytes[dir ^ 1]);
    CHECK(f->last_seen == 2.5);
    /* an ACK's acknowledgment number is remembered for its direction, nothing else changes */
    uint32_t ack = udp ? 0 : get32(data + m->hdr + m->l4_off + 8);
    CHECK(f->ack[dir] == (m->tcp_flags & PKS_TCP_ACK && moves ? ack : acks[slot][dir]));
    CHECK(f->ack[dir ^ 1] == acks[slot][dir ^ 1]);
    /* C decides on every packet of a flow given a grid; without one, not on those with SYN,
     * FIN or RST */
    uint8_t stop = md->t->has_trans ? 0 : PKS_TCP_SYN | PKS_TCP_RST | PKS_TCP_FIN;
    uint8_t syn_ack_rst = m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST);
    int synack = md->t->has_trans && dir == 1 && syn_ack_rst == (PKS_TCP_SYN | PKS_TCP_ACK);
    int fast = udp || !(m->tcp_flags & stop);
    uint8_t state = md->s[slot].state;
    uint8_t want = state;
    if (fast && md->t->has_trans && moves) {   /* RST > SYN > FIN > ACK, as tcpstate.event_of;
                                                  an RST in the window, not exact: no move */
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
