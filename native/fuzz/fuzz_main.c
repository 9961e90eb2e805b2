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
 *             an ICMP error about a flow (the model inserts one its quote is about), sent back
 *             to the quote's source, comes out with valid checksums, quoting the packet as
 *             the flow's other way sees it, and any other ICMP is dropped with an icmp_*
 *             reason, the buffer untouched.
 *   opens   - with the packet's service running a program (rr and wrr with their state, a
 *             hash table with empty slots, lc, wlc, lrt), a small SNAT pool and half-open limit
 *             (drive_opens): SYNs from other client ports, state changes, expiry, removals,
 *             events and reprogramming in any order keep every used flow indexed, the count,
 *             half-open list, free stack and timer heap right, each SNAT pair in use held by
 *             one flow of its endpoint and counted so, and each pick the program's.
 *   trace   - with a trace buffer of 1 to 4 records (some inputs of table and opens), every
 *             decision appends exactly one record, or counts one lost when it does not fit,
 *             whose verdict, reason, lengths, flow and state match, and whose copies are the
 *             packet as it came and left (a partial checksum finished in them).
 */
#include "fuzz.h"


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
