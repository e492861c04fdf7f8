/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_BYTES_H
#define STF_BYTES_H

/*
 * Little-endian integers in byte buffers: the one copy of the readers and
 * writers (safetensors' header size, .npy header lengths, element bits).
 * They take any alignment and work the same on a big-endian host.
 */

#include <stddef.h>
#include <stdint.h>

static inline uint16_t stf_le16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t stf_le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t stf_le64(const uint8_t *p)
{
        return (uint64_t)stf_le32(p) | (uint64_t)stf_le32(p + 4) << 32;
}

/* Write the low @n bytes of @v (n <= 8) at @p, least significant first. */
static inline void stf_put_le(uint8_t *p, uint64_t v, size_t n)
{
        for (size_t i = 0; i < n; i++, v >>= 8)
                p[i] = (uint8_t)(v & 0xff);
}

static inline void stf_put_le64(uint8_t *p, uint64_t v)
{
        stf_put_le(p, v, 8);
}

#endif
