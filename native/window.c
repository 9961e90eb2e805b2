/* TCP window tracking, as conntrack's tcp_in_window (nf_conntrack_proto_tcp.c) reduced: per
 * direction the highest sequence number sent (seq_end), the highest acknowledgment (ack),
 * the right edge of the window the other way allowed (maxend), the largest window advertised
 * (maxwin) and the window scale of its SYN. A packet whose sequence numbers lie outside what
 * its receiver would take, or whose acknowledgment covers data never sent, is dropped with a
 * reason; an RST moves the flow only on the exact sequence number its receiver expects
 * (RFC 5961 3.2); one elsewhere in the window, and a SYN, are passed on, for the endpoint to
 * answer with a challenge ACK, without moving the flow: not its state, nor its sequence
 * numbers. The checks start once both ways have a window (from the client's
 * first ACK of the SYN-ACK); before it, the handshake is left to the endpoints. */
#include "pks_internal.h"

#define WINDOW_SLACK 65536u /* conntrack's MAXACKWINDOW floor: how far behind a segment may
                               be and still be a retransmission */

/* a before b in sequence space (RFC 1982 serial arithmetic) */
static inline int before(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

const uint8_t *tcp_option(const uint8_t *th, uint32_t hlen, uint8_t kind, uint8_t len)
{
    for (uint32_t i = 20; i < hlen;) {
        uint8_t k = th[i];
        if (k == 0)
            break;
        if (k == 1) {
            i++;
            continue;
        }
        if (i + 1 >= hlen || th[i + 1] < 2 || i + th[i + 1] > hlen)
            break;
        if (k == kind && th[i + 1] == len)
            return th + i;
        i += th[i + 1];
    }
    return NULL;
}

/* the window scale option of a SYN (RFC 7323 2.2), shift + 1; 0: none */
static uint8_t scale_option(const uint8_t *th, uint32_t hlen)
{
    const uint8_t *o = tcp_option(th, hlen, 3, 3);
    return o ? (uint8_t)((o[2] > 14 ? 14 : o[2]) + 1) : 0;
}

/* the shift of way d's windows: its SYN's, when both SYNs carried the option */
static inline uint8_t shift(const pks_flow *f, uint8_t d)
{
    return f->wscale[0] && f->wscale[1] ? (uint8_t)(f->wscale[d] - 1) : 0;
}

void window_syn(pks_flow *f, uint8_t d, const uint8_t *th, uint32_t hlen)
{
    f->wscale[d] = scale_option(th, hlen);
}

int window_check(pks_table *t, const pks_flow *f, const pks_meta *m, const uint8_t *th)
{
    uint8_t d = m->dir, r = d ^ 1, flags = m->tcp_flags;
    if ((f->win_known & 3) != 3)
        return 0;                   /* no window both ways yet: the handshake is the grid's */
    if (flags & PKS_TCP_SYN)
        return 1;                   /* a SYN on an open flow (a retransmitted SYN-ACK, or a
                                       blind SYN the endpoint answers with a challenge ACK):
                                       passed on, and nothing of the flow moves */
    uint32_t seq = rd32(th + 4);
    uint32_t end = seq + m->payload + !!(flags & PKS_TCP_FIN);
    /* how far behind a segment or an acknowledgment may be (conntrack's MAXACKWINDOW) */
    uint32_t aspan = f->maxwin[d] > WINDOW_SLACK ? f->maxwin[d] : WINDOW_SLACK;
    if (flags & PKS_TCP_RST) {
        if ((f->acked[r] && seq == f->ack[r]) || seq == f->seq_end[d])
            return 0;               /* what the receiver expects, or all the sender sent */
        if (!before(seq, f->acked[r] ? f->ack[r] : f->seq_end[d]) && !before(f->maxend[d], seq)) {
            t->rst_in_window++;     /* in the window, not exact: the endpoint answers with a
                                       challenge ACK, and the flow stays as it is */
            return 1;
        }
        return -PKS_E_RST_WINDOW;
    }
    int ok = !before(f->maxend[d], seq)                     /* not beyond the right edge */
             && !before(end, f->seq_end[d] - f->maxwin[r] - aspan);    /* nor too old */
    if (ok && (flags & PKS_TCP_ACK)) {      /* nor acknowledging what was never sent */
        uint32_t ack = rd32(th + 8);
        ok = !before(f->seq_end[r], ack) && !before(ack, f->seq_end[r] - aspan);
    }
    if (ok)
        return 0;
    return flags & PKS_TCP_FIN ? -PKS_E_FIN_WINDOW : -PKS_E_TCP_WINDOW;
}

void window_update(pks_flow *f, const pks_meta *m, const uint8_t *th)
{
    uint8_t d = m->dir, r = d ^ 1, flags = m->tcp_flags;
    uint32_t seq = rd32(th + 4);
    uint32_t end = seq + m->payload + !!(flags & PKS_TCP_SYN) + !!(flags & PKS_TCP_FIN);
    if (before(f->seq_end[d], end) || f->seq_end[d] == 0)
        f->seq_end[d] = end;
    if (!(flags & PKS_TCP_ACK))
        return;
    uint32_t ack = rd32(th + 8);
    if (!f->acked[d] || before(f->ack[d], ack))
        f->ack[d] = ack;
    f->acked[d] = 1;
    /* a SYN's window is never scaled (RFC 7323 2.2) */
    uint32_t win = (uint32_t)rd16(th + 14) << ((flags & PKS_TCP_SYN) ? 0 : shift(f, d));
    if (win > f->maxwin[d])
        f->maxwin[d] = win;
    uint32_t edge = ack + (win ? win : 1);  /* (a zero window still takes a probe byte) */
    if (!(f->win_known >> r & 1) || before(f->maxend[r], edge))
        f->maxend[r] = edge;
    f->win_known |= (uint8_t)(1u << r);
}
