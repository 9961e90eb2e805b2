/* Tracing: each packet pks_process decides on, copied before and after its rewrite. */
#pragma once
#include <stdint.h>
#include "pks_table.h"

/* One record in the trace buffer (pks_trace_set), followed by `cap` bytes of the packet as
 * it came and, when it was forwarded, `out_cap` bytes of it as it left (a rewrite keeps the
 * length; a packet C answers with, cookie.c, may be up to PKS_ROOM longer). The copies are IP packets, without the virtio_net_hdr (in vnet); a TCP checksum
 * that the device was to finish (partial) is finished in the copies, as the wire carries it. */
typedef struct {
    uint32_t size;      /* bytes of this record with its copies, a multiple of 8 */
    uint32_t len;       /* the IP packet's length */
    uint32_t cap;       /* bytes of it copied: min(len, snap) */
    uint32_t out_len;   /* forwarded: the IP packet's length as it left; else 0 */
    uint32_t out_cap;   /* bytes of that copied: min(out_len, snap) */
    int32_t slot;       /* its flow's slot after the decision, -1: none */
    uint32_t service;   /* its flow's numbers, PKS_NONE: no flow */
    uint32_t backend;
    uint32_t client;    /* the client address (its flow's, else the packet's source), host
                           order, and port; has_client 0: the packet did not parse that far */
    uint16_t client_port;
    uint8_t has_client;
    uint8_t verdict;    /* PKS_V_FAST or PKS_V_DROP */
    uint8_t err;        /* with PKS_V_DROP: PKS_E_* */
    uint8_t from;       /* its flow's state before and after (a new flow: from PKS_S_NONE) */
    uint8_t to;
    uint8_t partial;    /* the checksum was partial and is finished in the copies */
    uint8_t vnet[PKS_VNET_HDR_LEN]; /* the virtio_net_hdr it came with (zeros without one) */
    uint16_t pad;
    double t;           /* `now` of the decision */
} pks_trace_rec;

/* Python turns tracing on by handing C a buffer (cap bytes, 8-aligned, Python's memory until
 * it turns tracing off with cap 0): from then on pks_process appends a record for every
 * packet it decides on (one it leaves to Python is recorded when Python hands it back), each
 * copy cut to snap bytes, until Python takes them (reads trace_used bytes, sets it to 0). A
 * record that does not fit is not written and counted in trace_lost. 0; -1: cap holds no
 * record of snap bytes, or a misaligned buffer. */
int pks_trace_set(pks_table *t, uint8_t *buf, uint32_t cap, uint32_t snap);
/* the bytes one record of a packet of len bytes takes at most with snap (both copies) */
uint32_t pks_trace_size(uint32_t len, uint32_t snap);
