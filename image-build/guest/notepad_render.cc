#include "notepad_render.h"

#include <fstream>
#include <iterator>

namespace notepad {
namespace {

uint32_t Le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
         uint32_t(p[3]) << 24;
}

void MapAscii(Font* font, uint32_t codepoint, int glyph) {
  if (codepoint < 128 && font->glyph_for_ascii[codepoint] < 0) {
    font->glyph_for_ascii[codepoint] = glyph;
  }
}

}  // namespace

std::optional<Font> ParsePsf(const std::vector<uint8_t>& b,
                             std::string* error) {
  Font font;
  for (int& g : font.glyph_for_ascii) g = -1;
  size_t glyph_count = 0, glyph_bytes = 0, offset = 0;
  bool has_table = false, psf2 = false;
  if (b.size() >= 4 && b[0] == 0x36 && b[1] == 0x04) {
    glyph_count = (b[2] & 0x01) ? 512 : 256;
    has_table = (b[2] & 0x06) != 0;
    font.height = b[3];
    font.width = 8;
    glyph_bytes = b[3];
    offset = 4;
  } else if (b.size() >= 32 && Le32(&b[0]) == 0x864ab572) {
    psf2 = true;
    offset = Le32(&b[8]);
    has_table = (Le32(&b[12]) & 1) != 0;
    glyph_count = Le32(&b[16]);
    glyph_bytes = Le32(&b[20]);
    font.height = static_cast<int>(Le32(&b[24]));
    font.width = static_cast<int>(Le32(&b[28]));
  } else {
    *error = "not a PC screen font (no PSF1 or PSF2 magic)";
    return std::nullopt;
  }
  if (font.width < 1 || font.width > 32 || font.height < 1 ||
      font.height > 64 || glyph_count == 0 || glyph_count > 65536) {
    *error = "PSF header has an implausible glyph size or count";
    return std::nullopt;
  }
  font.bytes_per_row = (font.width + 7) / 8;
  if (glyph_bytes != size_t(font.bytes_per_row) * font.height ||
      offset > b.size() || glyph_count * glyph_bytes > b.size() - offset) {
    *error = "PSF file is truncated or its glyph size is inconsistent";
    return std::nullopt;
  }
  font.glyphs.assign(b.begin() + offset,
                     b.begin() + offset + glyph_count * glyph_bytes);
  size_t p = offset + glyph_count * glyph_bytes;
  if (!has_table) {
    for (size_t c = 0; c < 128 && c < glyph_count; ++c) MapAscii(&font, c, c);
    return font;
  }
  // Unicode table: for each glyph, the code points it draws, then a
  // terminator. Sequences (after a separator) are combinations: skipped.
  for (size_t glyph = 0; glyph < glyph_count && p < b.size(); ++glyph) {
    bool in_sequence = false;
    if (!psf2) {
      while (p + 1 < b.size()) {
        uint16_t u = uint16_t(b[p] | b[p + 1] << 8);
        p += 2;
        if (u == 0xFFFF) break;
        if (u == 0xFFFE) { in_sequence = true; continue; }
        if (!in_sequence) MapAscii(&font, u, static_cast<int>(glyph));
      }
    } else {
      while (p < b.size()) {
        uint8_t c = b[p];
        if (c == 0xFF) { ++p; break; }
        if (c == 0xFE) { ++p; in_sequence = true; continue; }
        // Only one-byte UTF-8 (ASCII) matters; skip longer sequences whole.
        size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (!in_sequence && len == 1) MapAscii(&font, c, static_cast<int>(glyph));
        p += len;
      }
    }
  }
  return font;
}

std::optional<Font> LoadPsf(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open font " + path;
    return std::nullopt;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (bytes.size() > (4u << 20)) {
    *error = "font " + path + " is larger than 4 MiB";
    return std::nullopt;
  }
  auto font = ParsePsf(bytes, error);
  if (!font) *error = path + ": " + *error;
  return font;
}

void Render(const Font& font, std::string_view text, uint32_t* fb, Mode mode) {
  const int margin = 4;
  const int cols = (kWidth - 2 * margin) / font.width;
  const int rows = (kHeight - 2 * margin) / font.height;
  for (int i = 0; i < kWidth * kHeight; ++i) fb[i] = kBackground;
  if (mode == Mode::kClosed) return;
  if (mode == Mode::kSaved) {
    for (int i = 0; i < kWidth * 2; ++i) fb[i] = kSavedMark;
  }

  // Lay out (row, col) for every character, then show the last `rows` rows.
  struct Cell { int row, col; char c; };
  std::vector<Cell> cells;
  cells.reserve(text.size());
  int row = 0, col = 0;
  for (char c : text) {
    if (c == '\n') { ++row; col = 0; continue; }
    if (col == cols) { ++row; col = 0; }
    cells.push_back({row, col++, c});
  }
  if (col == cols) { ++row; col = 0; }
  const int first = row >= rows ? row - rows + 1 : 0;

  auto draw_glyph = [&](int r, int cl, int glyph) {
    const uint8_t* g = font.glyphs.data() +
                       size_t(glyph) * font.height * font.bytes_per_row;
    int x0 = margin + cl * font.width, y0 = margin + (r - first) * font.height;
    for (int y = 0; y < font.height; ++y) {
      for (int x = 0; x < font.width; ++x) {
        if (g[y * font.bytes_per_row + x / 8] & (0x80 >> (x % 8))) {
          fb[(y0 + y) * kWidth + x0 + x] = kForeground;
        }
      }
    }
  };
  for (const Cell& cell : cells) {
    if (cell.row < first) continue;
    unsigned char uc = static_cast<unsigned char>(cell.c);
    int glyph = uc < 128 ? font.glyph_for_ascii[uc] : -1;
    if (glyph < 0) glyph = font.glyph_for_ascii[static_cast<int>('?')];
    if (glyph >= 0) draw_glyph(cell.row, cell.col, glyph);
  }
  // Cursor: a bar under the next character cell.
  int x0 = margin + col * font.width, y0 = margin + (row - first) * font.height;
  for (int y = font.height - 2; y < font.height; ++y) {
    for (int x = 0; x < font.width; ++x) fb[(y0 + y) * kWidth + x0 + x] = kCursor;
  }
}

bool ApplyKey(uint32_t keysym, std::string* doc) {
  if (keysym == 0xff08) {  // XK_BackSpace
    if (doc->empty()) return false;
    doc->pop_back();
    return true;
  }
  char c;
  if (keysym >= 0x20 && keysym <= 0x7e) {
    c = static_cast<char>(keysym);
  } else if (keysym == 0xff0d || keysym == 0xff8d) {  // Return, KP_Enter
    c = '\n';
  } else {
    return false;
  }
  if (doc->size() >= kMaxDocument) return false;
  doc->push_back(c);
  return true;
}

uint64_t Checksum(std::string_view doc) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : doc) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace notepad
