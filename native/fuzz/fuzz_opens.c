/* New flows in C: a service program, SNAT pool and half-open limit driven by the input. */
#include "fuzz.h"

static int closing(const pks_flow *f)
{
    return f->state == PKS_S_TIME_WAIT || f->state == PKS_S_CLOSE;
}

/* each entry of the client table counts the flows counted under it that have not finished,
 * no more, no fewer */
static void check_clients(const pks_table *t)
{
    uint32_t counted = 0, total = 0, used = 0;
    for (uint32_t i = 0; i < NSLOTS; i++)
        counted += t->flows[i].used && t->flows[i].client_bits && !closing(&t->flows[i]);
    CHECK(t->clients || !counted);
    for (uint32_t k = 0; t->clients && k <= t->clients->mask; k++) {
        const pks_client *e = &t->clients->slots[k];
        if (e->svc_bits == PKS_NONE)
            continue;
        used++;
        uint32_t bits = e->svc_bits & 63, mine = 0;
        CHECK(bits >= 1 && bits <= 32);
        for (uint32_t i = 0; i < NSLOTS; i++) {
            const pks_flow *f = &t->flows[i];
            uint32_t a = (uint32_t)f->key[0].saddr[0] << 24 | (uint32_t)f->key[0].saddr[1] << 16
                         | (uint32_t)f->key[0].saddr[2] << 8 | f->key[0].saddr[3];
            mine += f->used && f->client_bits == bits && (f->service << 6 | bits) == e->svc_bits
                    && (a & ~0u << (32 - bits)) == e->addr && !closing(f);
        }
        CHECK(e->flows == mine);
        total += mine;
    }
    CHECK(total == counted && (!t->clients || used == t->clients->count));
}

void check_opens(opens *o)
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
    CHECK(t->count == used && t->nkeys == 2 * used && t->ho.count == half);
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
    for (uint32_t s = t->ho.head; s != PKS_NONE; s = t->flows[s].next, n++)
        CHECK(s < NSLOTS && n < NSLOTS && t->flows[s].state == PKS_S_SYN_RECV);
    CHECK(n == half);
    uint32_t closing = 0, prev = PKS_NONE;      /* the closing list: every such flow, linked */
    for (uint32_t i = 0; i < NSLOTS; i++)
        closing += t->flows[i].used && (t->flows[i].state == PKS_S_TIME_WAIT
                                        || t->flows[i].state == PKS_S_CLOSE);
    n = 0;
    for (uint32_t s = t->closing.head; s != PKS_NONE; prev = s, s = t->flows[s].next, n++) {
        CHECK(s < NSLOTS && n < NSLOTS && t->flows[s].prev == prev);
        CHECK(t->flows[s].state == PKS_S_TIME_WAIT || t->flows[s].state == PKS_S_CLOSE);
    }
    CHECK(n == closing && t->closing.count == closing && t->closing.tail == prev);
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
    check_clients(t);
    if (o->prog >= 0) {                 /* the program's state is what the picks made it */
        int64_t got[4];
        int64_t k = pks_service_state(t, 0x10007u, got, 4);
        CHECK(k >= 0 && memcmp(got, o->state, (size_t)k * sizeof got[0]) == 0);
    }
}

/* A SYN refused an SNAT pair: some endpoint has every pair in use, none held by a flow that
 * finished or is half-open (the tables here are shorter than a reclaim's look) */
static int snat_refusal_ok(const opens *o)
{
    for (uint32_t ep = 0; ep < 3; ep++) {
        const pks_snatq *q = &o->pool->q[ep];
        if (q->fresh < o->pool->size || q->count)
            continue;
        int held = 0;
        for (uint32_t i = 0; i < NSLOTS; i++) {
            const pks_flow *f = &o->t->flows[i];
            held |= f->used && o->t->bk_ep[f->backend] == ep
                    && (f->state == PKS_S_TIME_WAIT || f->state == PKS_S_CLOSE
                        || f->state == PKS_S_SYN_RECV);
        }
        if (!held)
            return 1;
    }
    return 0;
}

/* the packet C wrote (m says where): its IP checksum holds, and its TCP one unless partial,
 * by the reference checksum */
static int packet_ok(const uint8_t *buf, const pks_meta *m)
{
    const uint8_t *ip = buf + m->hdr;
    if (get16(ip + 2) != m->ip_len || ref_csum(ip, (uint32_t)(ip[0] & 0x0f) * 4, 0) != 0)
        return 0;
    return m->partial || model_l4_csum_ok(ip, m);
}

/* Python's removal of a flow: its SNAT pair back to the pool, the slot free */
void python_remove(opens *o, uint32_t slot, double now)
{
    pks_flow *f = &o->t->flows[slot];
    if (f->has_snat)
        CHECK(pks_snat_release(o->pool, o->t->bk_ep[f->backend],
                               (uint32_t)(f->snat_port - o->pool->lo) * o->pool->naddrs
                                   + f->snat_addr, now) == 0);
    CHECK(pks_table_remove(o->t, slot) == 0);
}

void take_events(opens *o)
{
    pks_event evs[8];
    uint32_t n;
    while ((n = pks_events_take(o->t, evs, 8)) > 0)
        for (uint32_t k = 0; k < n; k++) {
            const pks_event *e = &evs[k];
            CHECK(e->slot < NSLOTS && e->kind >= PKS_EV_RESPONSE && e->kind <= PKS_EV_RECLAIM);
            if (e->kind == PKS_EV_OPEN) {
                o->opened++;
                CHECK(e->service == SVC);
            }
            if (e->kind == PKS_EV_END || e->kind == PKS_EV_EVICT || e->kind == PKS_EV_RECLAIM) {
                o->ended++;
                if (e->kind == PKS_EV_EVICT)
                    CHECK(e->from == PKS_S_SYN_RECV);
                else if (e->kind == PKS_EV_END)
                    CHECK(e->from == PKS_S_TIME_WAIT || e->from == PKS_S_CLOSE);
            }
        }
}

static const int PROGS[8] = {PKS_PROG_RR, PKS_PROG_WRR, PKS_PROG_LRT, PKS_PROG_HASH,
                             PKS_PROG_LC, PKS_PROG_WLC, PKS_PROG_RR, PKS_PROG_HASH};

void program(opens *o, const uint8_t *op, const pks_meta *m)
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
    /* per-client limits, or none: a prefix of 16..32 bits, 0..3 flows, a rate, a burst */
    uint32_t lbits = op[1] & 0x04 ? 16 + op[0] % 17 : 0;
    double rate = (op[0] & 0x18) ? 8.0 / (op[0] >> 3 & 3) : 0.0;
    CHECK(pks_service_limits(o->t, SVC, lbits, op[1] >> 6, rate, 1 + (op[1] >> 1 & 1)) == 0);
    CHECK(pks_service_limits(o->t, SVC, 33, 0, 0, 1) == -1);
    CHECK(pks_service_limits(o->t, SVC_NONE, 32, 1, 0, 1) == -1);
}

void drive_opens(const uint8_t *data, size_t size, const pks_meta *m, int vnet)
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
    /* SYN cookies: never, always, or from 1-3 half-open flows on */
    uint32_t cookies_from = data[size - 4] & 0x40 ? (data[size - 4] & 0x80 ? 0 : 1 + data[2] % 3)
                                                  : PKS_NONE;
    CHECK(pks_table_set_cookies(o.t, cookies_from, HKEY, sizeof HKEY - 1) == 0);
    CHECK(pks_table_set_cookies(o.t, 0, HKEY, 0) == -1);
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
    uint8_t *buf = malloc(size + PKS_VNET_HDR_LEN + PKS_ROOM);    /* (cookie.c's room) */
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
            uint32_t bslot = (op[0] >> 3) % NSLOTS;   /* or (op[1] & 1) from a flow's backend */
            if ((op[0] & 7) == 2 && (op[1] & 1) && o.t->flows[bslot].used) {
                const pks_key *k = &o.t->flows[bslot].key[1];
                uint8_t *ip = buf + m->hdr;
                memcpy(ip + 12, k->saddr, 4);
                memcpy(ip + 16, k->daddr, 4);
                th[0] = (uint8_t)(k->sport >> 8);
                th[1] = (uint8_t)k->sport;
                th[2] = (uint8_t)(k->dport >> 8);
                th[3] = (uint8_t)k->dport;
                ip[10] = ip[11] = 0;
                uint16_t c = pks_csum(ip, (uint32_t)(ip[0] & 0x0f) * 4, 0);
                ip[10] = (uint8_t)(c >> 8);
                ip[11] = (uint8_t)c;
            } else if ((op[0] & 0x40) && o.cookie_port) {  /* the last cookie's ACK, or not */
                th[1] = o.cookie_port;
                th[13] = PKS_TCP_ACK;
                put32(th + 4, o.cookie_isn + 1 - (op[1] >> 7));
                put32(th + 8, o.cookie + 1 + (op[1] & 0x40 ? 0x10000u : 0));
            }
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
            uint64_t cookies = o.t->cookies_sent, cookie_opens = o.t->cookie_opens;
            uint32_t in_seq = get32(th + 4);
            uint8_t in_port = th[1];
            uint32_t used = o.t->trace_used;
            uint64_t lost = o.t->trace_lost;
            uint8_t *came = malloc(size);
            CHECK(came != NULL);
            memcpy(came, buf, size);
            int v = pks_process(o.t, buf, (uint32_t)size, now, &pm, vnet);
            CHECK(v == PKS_V_FAST || v == PKS_V_SLOW || v == PKS_V_DROP);
            check_trace(o.t, used, lost, came, buf, size, v, &pm, vnet);
            if (v == PKS_V_DROP)
                CHECK(memcmp(buf, came, size) == 0);    /* a dropped packet leaves as it came */
            free(came);
            if (o.t->trace_used > o.t->trace_cap / 2)
                o.t->trace_used = 0;            /* as Python takes the records */
            if (o.refused && th[13] == PKS_TCP_SYN)
                CHECK(o.t->opened == opened);   /* a refused client's SYN opens nothing */
            if (v == PKS_V_FAST && !(op[0] & 0x80))
                CHECK(packet_ok(buf, &pm));     /* whatever C wrote, its checksums hold */
            if (v == PKS_V_FAST && o.t->cookies_sent != cookies) {   /* a cookie's SYN-ACK */
                const uint8_t *ot = buf + pm.hdr + pm.l4_off;
                CHECK(o.t->cookies_sent == cookies + 1 && o.t->opened == opened);
                CHECK(o.t->count == count && o.t->ev_count == from);    /* nothing held */
                CHECK(ot[13] == (PKS_TCP_SYN | PKS_TCP_ACK) && get32(ot + 8) == in_seq + 1);
                o.cookie = get32(ot + 4);
                o.cookie_isn = in_seq;
                o.cookie_port = in_port;
            }
            if (o.t->opened != opened && o.t->cookie_opens != cookie_opens) {  /* by its ACK */
                const uint8_t *ot = buf + pm.hdr + pm.l4_off;
                CHECK(ot[13] == PKS_TCP_SYN && get32(ot + 4) + 1 == in_seq + (op[1] >> 7));
                CHECK(o.t->flows[pm.slot].cookie == PKS_CK_SYN_SENT);
            }
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
                else if (o.prog == PKS_PROG_LC || o.prog == PKS_PROG_WLC
                         || o.prog == PKS_PROG_LRT)
                    check_least(&o, (uint32_t)pm.slot, from);
                else {                      /* rr, wrr: the model's pick */
                    double value = -1;
                    int64_t k = model_pick(&o, o.state, &value);
                    CHECK(k >= 0 && f->backend == o.picks[k].backend && e->value == value);
                }
            } else if (v == PKS_V_DROP && pm.err >= PKS_E_NO_FLOW) {
                CHECK(o.t->count == count && o.t->ev_count == from);  /* nothing changed */
                if (pm.err == PKS_E_SNAT)
                    CHECK(snat_refusal_ok(&o));
                if (pm.err == PKS_E_CLIENT_FLOWS) {   /* the client has its most flows */
                    uint32_t mine = 0, most = o.t->svc[0].lim_flows;
                    for (uint32_t i = 0; i < NSLOTS; i++)
                        mine += o.t->flows[i].used && o.t->flows[i].client_bits
                                && !closing(&o.t->flows[i]);
                    CHECK(o.t->nsvc == 1 && most && mine >= most);
                }
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
            pks_clients_sweep(o.t, now + op[1] % 4, 1 + op[0] * 8u);
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
