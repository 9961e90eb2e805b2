/* The Internet checksum (RFC 1071), the reference every incremental update is held to. */
#include "pks_internal.h"

uint16_t pks_csum(const uint8_t *buf, uint32_t len, uint32_t sum)
{
    uint64_t s = sum;
    uint32_t i = 0;
    for (; i + 1 < len; i += 2)
        s += rd16(buf + i);
    if (len & 1)
        s += (uint32_t)buf[len - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}
