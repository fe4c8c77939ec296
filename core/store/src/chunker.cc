#include "slingshot/store/chunker.h"

#include <array>
#include <bit>

#include "slingshot/store/chunk_source.h"

namespace slingshot {
namespace {

// 256 pseudo-random 64-bit values (splitmix64 from a fixed seed): fixed
// forever, since changing them changes every chunk boundary.
constexpr std::array<uint64_t, 256> MakeGear() {
  std::array<uint64_t, 256> g{};
  uint64_t x = 0x5EED5EED5EED5EEDull;
  for (auto& v : g) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    v = z ^ (z >> 31);
  }
  return g;
}
constexpr auto kGear = MakeGear();

// A mask with `bits` ones spread over the high 48 bits of the gear hash
// (the high bits depend on the most recent ~48 bytes).
uint64_t SpreadMask(int bits) {
  bits = std::clamp(bits, 1, 48);
  uint64_t m = 0;
  for (int i = 0; i < bits; ++i) m |= 1ull << (63 - (i * 48) / bits);
  return m;
}

}  // namespace

Status ChunkerOptions::Validate() const {
  if (min_size < 64 || min_size >= avg_size || avg_size > max_size || max_size > kMaxChunkSize) {
    return Status::InvalidArgument(
        "chunker sizes must satisfy 64 <= min < avg <= max <= 16 MiB (got min=" +
        std::to_string(min_size) + " avg=" + std::to_string(avg_size) +
        " max=" + std::to_string(max_size) + ")");
  }
  return Status::OK();
}

FastCdcChunker::FastCdcChunker(const ChunkerOptions& options, ChunkFn on_chunk)
    : opt_(options), on_chunk_(std::move(on_chunk)) {
  int bits = std::bit_width(opt_.avg_size) - 1;  // floor(log2(avg))
  mask_s_ = SpreadMask(bits + 2);
  mask_l_ = SpreadMask(bits - 2);
  buf_.reserve(2 * static_cast<size_t>(opt_.max_size));
}

size_t FastCdcChunker::Scan(ByteView d, bool final) {
  const size_t n = d.size();
  const size_t end = std::min<size_t>(n, opt_.max_size);
  const size_t normal = std::min<size_t>(end, opt_.avg_size);
  size_t i = scan_pos_;
  uint64_t h = hash_;
  if (i < opt_.min_size) {  // cut-point skipping: never cut inside min_size
    i = opt_.min_size;
    h = 0;
  }
  size_t cut = 0;
  for (; i < normal; ++i) {
    h = (h << 1) + kGear[d[i]];
    if ((h & mask_s_) == 0) { cut = i + 1; break; }
  }
  if (cut == 0) {
    for (; i < end; ++i) {
      h = (h << 1) + kGear[d[i]];
      if ((h & mask_l_) == 0) { cut = i + 1; break; }
    }
  }
  if (cut == 0 && (end == opt_.max_size || final)) cut = end;
  if (cut == 0) {  // remember where we stopped; resume when more bytes come
    scan_pos_ = std::max<size_t>(i, opt_.min_size);
    hash_ = h;
    return 0;
  }
  scan_pos_ = 0;
  hash_ = 0;
  return cut;
}

Status FastCdcChunker::Drain(bool final) {
  while (start_ < buf_.size()) {
    ByteView rest(buf_.data() + start_, buf_.size() - start_);
    size_t cut = Scan(rest, final);
    if (cut == 0) break;
    failed_ = on_chunk_(rest.first(cut));
    if (!failed_.ok()) return failed_;
    ++chunks_out_;
    start_ += cut;
  }
  if (start_ > 0 && (start_ >= buf_.size() / 2)) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(start_));
    start_ = 0;
  }
  return Status::OK();
}

Status FastCdcChunker::Write(ByteView data) {
  if (!failed_.ok()) return failed_;
  bytes_in_ += data.size();
  while (!data.empty()) {
    // Feed at most max_size at a time so the buffer stays bounded.
    size_t take = std::min<size_t>(data.size(), opt_.max_size);
    buf_.insert(buf_.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(take));
    data = data.subspan(take);
    SLINGSHOT_RETURN_IF_ERROR(Drain(false));
  }
  return Status::OK();
}

Status FastCdcChunker::Finish() {
  if (!failed_.ok()) return failed_;
  return Drain(true);
}

}  // namespace slingshot
