// Framebuffer: a copy of a replica's screen kept from its Screen updates
// (wire.h: rectangles of 32-bit 0x00RRGGBB pixels, raw or one zstd frame).
// The client proxy shows the leader's through its VNC server.
//
// Apply() checks every rectangle against the screen and its codec before it
// touches a pixel: a rectangle outside the screen, or one that does not
// decompress to exactly its size, is dropped (and counted), never written.
//
// Not thread-safe: the caller serializes Apply with readers of pixels().
#ifndef SLINGSHOT_SERVICE_FRAMEBUFFER_H_
#define SLINGSHOT_SERVICE_FRAMEBUFFER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "slingshot/net/wire.h"

namespace slingshot {

class Framebuffer {
 public:
  Framebuffer(uint16_t width, uint16_t height);

  // Applies s; calls on_rect(x, y, w, h) for each rectangle written. Returns
  // how many rectangles were dropped.
  size_t Apply(const wire::Screen& s, const std::function<void(int x, int y, int w, int h)>& on_rect = nullptr);

  uint16_t width() const { return width_; }
  uint16_t height() const { return height_; }
  // Row-major 0x00RRGGBB; stable address for the object's life.
  uint32_t* pixels() { return pixels_.data(); }
  const uint32_t* pixels() const { return pixels_.data(); }

 private:
  uint16_t width_, height_;
  std::vector<uint32_t> pixels_;
  std::vector<uint8_t> scratch_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_SERVICE_FRAMEBUFFER_H_
