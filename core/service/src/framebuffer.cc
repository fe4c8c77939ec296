#include "slingshot/service/framebuffer.h"

#include <zstd.h>

#include <cstring>

namespace slingshot {

Framebuffer::Framebuffer(uint16_t width, uint16_t height)
    : width_(width), height_(height), pixels_(size_t(width) * height, 0) {}

size_t Framebuffer::Apply(const wire::Screen& s, const std::function<void(int, int, int, int)>& on_rect) {
  size_t dropped = 0;
  for (const auto& r : s.rects) {
    if (uint32_t(r.x) + r.w > width_ || uint32_t(r.y) + r.h > height_) {
      ++dropped;
      continue;
    }
    const size_t bytes = size_t(r.w) * r.h * 4;
    const uint8_t* src = r.data.data();
    if (r.codec == 1) {
      scratch_.resize(bytes);
      size_t n = ZSTD_decompress(scratch_.data(), scratch_.size(), r.data.data(), r.data.size());
      if (ZSTD_isError(n) || n != bytes) {
        ++dropped;
        continue;
      }
      src = scratch_.data();
    } else if (r.codec != 0 || r.data.size() != bytes) {
      ++dropped;
      continue;
    }
    for (uint16_t row = 0; row < r.h; ++row) {
      std::memcpy(&pixels_[size_t(r.y + row) * width_ + r.x], src + size_t(row) * r.w * 4, size_t(r.w) * 4);
    }
    if (on_rect) on_rect(r.x, r.y, r.w, r.h);
  }
  return dropped;
}

}  // namespace slingshot
