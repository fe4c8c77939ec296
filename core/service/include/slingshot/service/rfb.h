// RFB (RFC 6143) pieces shared by the proxy and the "rfb" ServiceAdapter:
// the logged input types and their payloads, and the one pixel format
// Slingshot moves screens in.
//
// A logged input's payload is the RFB client-to-server message itself, as
// the service will receive it:
//   kKey      KeyEvent      8 bytes: type 4, down-flag, 2 pad, u32 keysym (big-endian)
//   kPointer  PointerEvent  6 bytes: type 5, button mask, u16 x, u16 y
//   kCutText  ClientCutText type 6, 3 pad, u32 length, Latin-1 text (<= 60 KiB)
// Other client messages (SetPixelFormat, SetEncodings, update requests) are
// per-session and never logged.
//
// Pixels: 32 bits, little-endian 0x00RRGGBB (wire::ScreenRect).
#ifndef SLINGSHOT_SERVICE_RFB_H_
#define SLINGSHOT_SERVICE_RFB_H_

#include <cstdint>
#include <string_view>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot::rfb {

enum InputType : uint16_t { kKey = 1, kPointer = 2, kCutText = 3 };

constexpr size_t kMaxCutText = 60u << 10;

Bytes KeyEvent(bool down, uint32_t keysym);
Bytes PointerEvent(uint8_t buttons, uint16_t x, uint16_t y);
Bytes CutText(std::string_view latin1);

// InvalidArgument unless payload is exactly one well-formed message of type.
Status CheckInput(uint16_t type, ByteView payload);

}  // namespace slingshot::rfb

#endif  // SLINGSHOT_SERVICE_RFB_H_
