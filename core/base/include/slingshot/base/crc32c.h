// CRC-32C (Castagnoli), the checksum of every Slingshot format on disk and on
// the wire. Uses the SSE4.2 crc32 instruction when the CPU has it, a table
// otherwise; both give the same values (RFC 3720 test vectors).
//
// Debian 12 ships no maintained crc32c library (no libcrc32c-dev in
// bookworm), so this small implementation is ours.
#ifndef SLINGSHOT_BASE_CRC32C_H_
#define SLINGSHOT_BASE_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace slingshot::crc32c {

// Returns the CRC-32C of data, continuing from init (the value of a previous
// Value()/Extend() call, or 0 to start).
uint32_t Extend(uint32_t init, const void* data, size_t n);
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(std::span<const uint8_t> d) { return Extend(0, d.data(), d.size()); }

}  // namespace slingshot::crc32c

#endif  // SLINGSHOT_BASE_CRC32C_H_
