/* Keyed BLAKE2b (RFC 7693) of a client, as sched/hashing.py hashes it. */
#include "pks_internal.h"

static const uint64_t b2_iv[8] = {
    0x6a09e667f3bcc908ull, 0xbb67ae8584caa73bull, 0x3c6ef372fe94f82bull, 0xa54ff53a5f1d36f1ull,
    0x510e527fade682d1ull, 0x9b05688c2b3e6c1full, 0x1f83d9abfb41bd6bull, 0x5be0cd19137e2179ull};
static const uint8_t b2_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t rotr64(uint64_t x, int n) { return x >> n | x << (64 - n); }

#define B2_G(a, b, c, d, x, y)                                                          \
    do {                                                                                \
        v[a] = v[a] + v[b] + (x);                                                       \
        v[d] = rotr64(v[d] ^ v[a], 32);                                                 \
        v[c] = v[c] + v[d];                                                             \
        v[b] = rotr64(v[b] ^ v[c], 24);                                                 \
        v[a] = v[a] + v[b] + (y);                                                       \
        v[d] = rotr64(v[d] ^ v[a], 16);                                                 \
        v[c] = v[c] + v[d];                                                             \
        v[b] = rotr64(v[b] ^ v[c], 63);                                                 \
    } while (0)

static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t count, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++) {
        m[i] = 0;
        for (int k = 7; k >= 0; k--)
            m[i] = m[i] << 8 | block[8 * i + k];
    }
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = b2_iv[i];
    }
    v[12] ^= count;
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = b2_sigma[r];
        B2_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* the state after the key block of a keyed, 8-byte BLAKE2b (the block is the last one when
 * no data follows) */
void b2_keyed(uint64_t h[8], const uint8_t *key, uint32_t keylen, int last)
{
    uint8_t block[128];
    if (keylen > PKS_HASH_KEY_MAX)
        keylen = PKS_HASH_KEY_MAX;
    memcpy(h, b2_iv, 8 * sizeof *h);
    h[0] ^= 0x01010000ull ^ (uint64_t)keylen << 8 ^ 8;     /* digest 8 bytes, keyed */
    memset(block, 0, sizeof block);
    memcpy(block, key, keylen);
    b2_compress(h, block, 128, last);
}

/* the hash from the state after the key block, of 1..128 bytes of data */
uint64_t b2_finish(const uint64_t keyed[8], const uint8_t *data, uint32_t len)
{
    uint64_t h[8];
    uint8_t block[128];
    memcpy(h, keyed, sizeof h);
    memset(block, 0, sizeof block);
    memcpy(block, data, len);
    b2_compress(h, block, 128 + len, 1);
    return h[0];
}

uint64_t pks_hash64(const uint8_t *key, uint32_t keylen, const uint8_t *data, uint32_t len)
{
    uint64_t h[8];
    b2_keyed(h, key, keylen, len == 0);
    return len ? b2_finish(h, data, len > 128 ? 128 : len) : h[0];
}

int pks_table_set_hash_key(pks_table *t, const uint8_t *key, uint32_t len)
{
    if (!len || len > PKS_HASH_KEY_MAX)
        return -1;
    b2_keyed(t->hash_state, key, len, 0);   /* once: every client hash starts from here */
    t->hash_key_len = len;
    return 0;
}
