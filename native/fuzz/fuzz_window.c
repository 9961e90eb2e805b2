/* TCP window tracking (window.c) held to a model written apart: the packet's flow is given a
 * window both ways from the input (around the packet's own sequence and acknowledgment
 * numbers, near and far), and the model says whether the packet is dropped and why, whether
 * an RST moves the flow, and where the right edge of the other way's window goes. */
#include "fuzz.h"

#define SLACK 65536u

/* a <= b, a < b in serial number arithmetic (RFC 1982) */
static int le(uint32_t a, uint32_t b) { return (int32_t)(b - a) >= 0; }
static int lt(uint32_t a, uint32_t b) { return (int32_t)(b - a) > 0; }

/* a signed distance from input bytes: up to +-127 scaled by 1, 64, 4096 or 262144 */
static int32_t reach(uint8_t b, uint8_t k) { return (int32_t)(int8_t)b * (1 << (6 * (k & 3))); }

void window_setup(pks_flow *f, uint8_t d, const uint8_t *data, size_t size, const pks_meta *m)
{
    const uint8_t *th = data + m->hdr + m->l4_off, *b = data + size - 8;
    if (size < 16 || !(b[0] & 1))
        return;                                 /* left with no window: unchecked */
    uint8_t r = d ^ 1;
    uint32_t seq = get32(th + 4), ack = get32(th + 8);
    f->win_known = 3;
    f->seq_end[d] = seq + (uint32_t)reach(b[1], b[0] >> 1);
    f->maxend[d] = seq + (uint32_t)reach(b[2], b[0] >> 3);
    f->acked[r] = (b[0] >> 5) & 1;
    f->ack[r] = seq + (uint32_t)reach(b[3], b[0] >> 6);
    f->seq_end[r] = ack + (uint32_t)reach(b[4], b[5]);
    f->maxwin[r] = (uint32_t)b[6] << (b[5] >> 4 & 15);
    f->maxwin[d] = (uint32_t)b[7] << (b[5] >> 2 & 15);
    f->wscale[0] = b[7] & 1 ? (uint8_t)(1 + (b[6] & 7)) : 0;
    f->wscale[1] = b[7] & 2 ? (uint8_t)(1 + (b[6] >> 3 & 7)) : 0;
}

int window_expect(const pks_flow *f, uint8_t d, const pks_meta *m, const uint8_t *th, int *moves)
{
    uint8_t r = d ^ 1, fl = m->tcp_flags;
    *moves = 1;
    if ((f->win_known & 3) != 3)
        return 0;
    if (fl & PKS_TCP_SYN) {
        *moves = 0;
        return 0;
    }
    uint32_t seq = get32(th + 4), ack = get32(th + 8);
    if (fl & PKS_TCP_RST) {
        uint32_t next = f->acked[r] ? f->ack[r] : f->seq_end[d];
        if ((f->acked[r] && seq == f->ack[r]) || seq == f->seq_end[d])
            return 0;
        if (le(next, seq) && le(seq, f->maxend[d])) {
            *moves = 0;
            return 0;
        }
        return PKS_E_RST_WINDOW;
    }
    uint32_t end = seq + m->payload + ((fl & PKS_TCP_FIN) ? 1 : 0);
    uint32_t behind = f->maxwin[d] > SLACK ? f->maxwin[d] : SLACK;
    int ok = le(seq, f->maxend[d]) && le(f->seq_end[d] - f->maxwin[r] - behind, end);
    if (fl & PKS_TCP_ACK)
        ok = ok && le(ack, f->seq_end[r]) && le(f->seq_end[r] - behind, ack);
    if (ok)
        return 0;
    return (fl & PKS_TCP_FIN) ? PKS_E_FIN_WINDOW : PKS_E_TCP_WINDOW;
}

void window_after(const pks_flow *was, const pks_flow *f, uint8_t d, const pks_meta *m,
                  const uint8_t *th)
{
    uint8_t r = d ^ 1, fl = m->tcp_flags;
    uint32_t seq = get32(th + 4), ack = get32(th + 8);
    uint32_t end = seq + m->payload + ((fl & PKS_TCP_SYN) ? 1 : 0) + ((fl & PKS_TCP_FIN) ? 1 : 0);
    CHECK(f->seq_end[d] == (was->seq_end[d] == 0 || lt(was->seq_end[d], end) ? end
                                                                              : was->seq_end[d]));
    CHECK(f->seq_end[r] == was->seq_end[r]);
    if (!(fl & PKS_TCP_ACK)) {
        CHECK(f->maxend[r] == was->maxend[r] && f->maxwin[d] == was->maxwin[d]);
        CHECK(f->win_known == was->win_known);
        return;
    }
    uint32_t shift = (fl & PKS_TCP_SYN) || !(was->wscale[0] && was->wscale[1])
                         ? 0 : (uint32_t)was->wscale[d] - 1;
    uint32_t win = (uint32_t)get16(th + 14) << shift;
    CHECK(f->maxwin[d] == (win > was->maxwin[d] ? win : was->maxwin[d]));
    uint32_t edge = ack + (win ? win : 1);
    int known = was->win_known >> r & 1;
    CHECK(f->maxend[r] == (!known || lt(was->maxend[r], edge) ? edge : was->maxend[r]));
    CHECK(f->win_known == (was->win_known | 1u << r));
}
