/* One packet: parse, look up, decide (fast path) or leave it to Python. A TCP flow's packet
 * is checked against its window and moves its state; a UDP flow's is counted and passed. */
#include "pks_internal.h"

void pks_apply(pks_table *t, uint8_t *buf, const pks_meta *m)
{
    pks_nat n;
    pks_flow_nat(t, (uint32_t)m->slot, m->dir, &n);
    pks_rewrite(buf, m, &n);
}

int pks_process(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m, int vnet)
{
    if (t->trace_cap)
        return trace_process(t, buf, len, now, m, vnet);
    return process_packet(t, buf, len, now, m, vnet);
}

/* the first request -> first response time (lrt's sample), once per flow */
static void time_response(pks_table *t, pks_flow *f, const pks_meta *m, double now)
{
    if (!m->payload || f->measured)
        return;
    if (m->dir == 0) {
        if (f->req_at == 0)
            f->req_at = now;
    } else if (f->req_at != 0) {
        event_put(t, (uint32_t)m->slot, PKS_EV_RESPONSE, f->state, f->state, 1, now,
                  now - f->req_at);
        f->measured = 1;
    }
}

int process_packet(pks_table *t, uint8_t *buf, uint32_t len, double now, pks_meta *m, int vnet)
{
    if ((vnet ? pks_parse_vnet(buf, len, m) : pks_parse(buf, len, m)) != PKS_OK)
        return PKS_V_DROP;
    if (m->key.proto == PKS_PROTO_ICMP)
        return native_icmp(t, buf, m, now);     /* with m->slot = -1 */
    int64_t e = pks_table_lookup(t, &m->key);
    if (e < 0)
        return native_open(t, buf, m, now, PKS_NONE);
    m->slot = (int32_t)(e >> 1);
    m->dir = (uint8_t)(e & 1);
    if (PKS_EVENTS - t->ev_count < 3)       /* no room to tell Python what it did: nothing is
                                               done, and Python, once it took the events,
                                               hands the packet back (core/switch.py) */
        return slow_exit(t, m, PKS_SLOW_EVENTS);
    pks_flow *f = &t->flows[m->slot];
    if (m->key.proto == PKS_PROTO_UDP) {        /* a datagram of a UDP flow: no state moves,
                                                   its timer goes on from last_seen */
        flow_count(t, f, m, now);
        time_response(t, f, m, now);
        pks_apply(t, buf, m);
        if (f->one_packet && m->dir == 1 && f->pkts[1] >= f->pkts[0]) {
            /* every datagram of the one-packet flow has its answer: it ends */
            event_put(t, (uint32_t)m->slot, PKS_EV_ANSWERED, f->state, f->state, 1, now, 0);
            if (f->has_snat)
                give_back(t, f);
            pks_table_remove(t, (uint32_t)m->slot);
        }
        return PKS_V_FAST;
    }
    if (m->dir == 0 && (f->state == PKS_S_TIME_WAIT || f->state == PKS_S_CLOSE)
        && (m->tcp_flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST | PKS_TCP_FIN))
               == PKS_TCP_SYN)
        /* the client's port, reused: the SYN is the new flow's, not counted on the old one,
         * which C ends as it opens the new flow (or leaves both to Python: m->slot is still
         * the old flow's then) */
        return native_open(t, buf, m, now, (uint32_t)m->slot);
    const uint8_t *th = buf + m->hdr + m->l4_off;
    int moved = 0;                              /* a cookie flow's backend packet, its
                                                   sequence number in the client's view */
    if (f->cookie && (moved = cookie_inbound(buf, m, f)) < 0)
        return drop_exit(m, -moved);
    int w = window_check(t, f, m, th);          /* 1: passed on, moving nothing */
    if (w < 0) {
        if (moved == 1)
            cookie_undo(buf, m, f);             /* a dropped packet leaves as it came */
        return drop_exit(m, -w);                /* nothing of the flow changes */
    }
    flow_count(t, f, m, now);
    if (w == 0) {                               /* the sequence space seen each way */
        if (m->dir == 1 && (m->tcp_flags & PKS_TCP_SYN))
            window_syn(f, 1, th, (uint32_t)(th[12] >> 4) * 4);
        window_update(f, m, th);
    }
    /* without a grid (a table nobody loaded one into), packets with SYN, FIN or RST are
     * Python's; with one, C moves the state for every packet */
    uint8_t flags = m->tcp_flags;
    int synack = t->has_trans && m->dir == 1
                 && (flags & (PKS_TCP_SYN | PKS_TCP_ACK | PKS_TCP_RST)) == (PKS_TCP_SYN | PKS_TCP_ACK);
    if (!t->has_trans && (flags & (PKS_TCP_SYN | PKS_TCP_RST | PKS_TCP_FIN)))
        return slow_exit(t, m, PKS_SLOW_NO_GRID);
    if (m->dir == 0 && (flags & PKS_TCP_SYN) && f->syns < 255)
        f->syns++;                              /* the client's SYN again (Karn: no sample) */
    if ((flags & PKS_TCP_RST) && m->dir == 1 && f->synack_at < 0)
        /* the backend refused the connection: a passive health signal (Python's to weigh) */
        event_put(t, (uint32_t)m->slot, PKS_EV_REFUSED, f->state, f->state, 1, now, 0);
    if (t->has_trans && f->state < PKS_STATES && w == 0) {  /* RST > SYN > FIN > ACK, as
                                                       tcpstate.event_of */
        int ev = (flags & PKS_TCP_RST) ? 3 : (flags & PKS_TCP_SYN) ? 0
                 : (flags & PKS_TCP_FIN) ? 1 : (flags & PKS_TCP_ACK) ? 2 : -1;
        if (ev >= 0) {
            uint8_t to = t->trans[m->dir][ev][f->state];
            if (to != f->state)     /* (C counts the backend's flows: Python is not told) */
                flow_state(t, (uint32_t)m->slot, to, now);
        }
    }
    if (synack && !f->synacked) {
        f->synacked = 1;
        if (f->synack_at < 0) {     /* the first SYN-ACK anyone saw: its time, the handshake
                                       time in value and the client's SYN count in `to` */
            f->synack_at = now;
            event_put(t, (uint32_t)m->slot, PKS_EV_SYNACK, f->state, f->syns, 1, now,
                      now - f->created);
        }
    }
    time_response(t, f, m, now);
    if (f->cookie)
        return cookie_outbound(t, buf, m, f);
    pks_apply(t, buf, m);
    return PKS_V_FAST;
}
