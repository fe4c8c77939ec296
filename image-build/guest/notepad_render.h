// The test guest's screen, as a pure function of its document.
//
// The notepad (notepad.cc) runs inside the test guest and draws its document
// with Render(); tests run the same Render() on the text they expect and
// compare it with the framebuffer they received over RFB, so a framebuffer
// shows state pixel for pixel. Nothing here depends on time or randomness.
//
// Fonts are PC screen fonts (PSF1 or PSF2, uncompressed), as shipped by
// Debian's console-setup-linux; the image build unpacks one next to the guest.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace notepad {

inline constexpr int kWidth = 640;
inline constexpr int kHeight = 400;
inline constexpr uint32_t kBackground = 0x00202830;  // 0x00RRGGBB
inline constexpr uint32_t kForeground = 0x00e8e8d0;
inline constexpr uint32_t kCursor = 0x0060c0ff;
inline constexpr uint32_t kSavedMark = 0x0040c060;  // a bar along the top edge

// What the editor shows: the document being edited, the same just after a
// save (with a green bar along the top edge until the next edit), or
// nothing (closed).
enum class Mode : uint32_t { kEditing = 0, kSaved = 1, kClosed = 2 };

// Keys beyond ApplyKey's: F2 saves, Escape closes, F3 opens (reloads the
// document from the disk). A closed notepad ignores every other key.
inline constexpr uint32_t kKeySave = 0xffbf;   // XK_F2
inline constexpr uint32_t kKeyOpen = 0xffc0;   // XK_F3
inline constexpr uint32_t kKeyClose = 0xff1b;  // XK_Escape
// F4: a notepad started with --probe tries each of its targets (TCP, 2 s)
// and appends "[A.B.C.D:PORT ok]" or "[A.B.C.D:PORT no]" to the document,
// so a test sees on screen what a replica's network let it reach.
inline constexpr uint32_t kKeyProbe = 0xffc1;  // XK_F4
// The document is capped so a runaway client cannot exhaust guest memory.
inline constexpr size_t kMaxDocument = 1 << 20;

struct Font {
  int width = 0;
  int height = 0;
  int bytes_per_row = 0;
  std::vector<uint8_t> glyphs;     // glyph_count * height * bytes_per_row
  int glyph_for_ascii[128] = {};   // -1 when the font has no glyph for it
};

// Parses a PSF1 or PSF2 font. On failure returns nullopt and sets *error to
// what was wrong.
std::optional<Font> ParsePsf(const std::vector<uint8_t>& bytes,
                             std::string* error);
std::optional<Font> LoadPsf(const std::string& path, std::string* error);

// Draws `text` into `fb` (kWidth * kHeight pixels, 0x00RRGGBB): the text
// wraps at the right edge, '\n' breaks lines, and when the text is longer
// than the screen the last lines are shown. A block cursor follows the text.
// In Mode::kSaved a bar marks the top edge; in Mode::kClosed only the
// background is drawn.
void Render(const Font& font, std::string_view text, uint32_t* fb, Mode mode = Mode::kEditing);

// Applies one key press (an X11 keysym) to a document. Returns false when
// the key does not change the document (unknown key, or document full).
bool ApplyKey(uint32_t keysym, std::string* doc);

// 64-bit FNV-1a of the document: what "doc" answers on the control port.
uint64_t Checksum(std::string_view doc);

}  // namespace notepad
