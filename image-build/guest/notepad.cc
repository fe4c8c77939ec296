// slingshot-notepad: the deterministic test service that runs inside the test
// guest (see image-build/guest-image.sh).
//
// - RFB on port 5900 (libvncserver): each key press edits the document and
//   the screen is redrawn by notepad::Render, a pure function of the text.
// - A line protocol on port 5901 for tests and benchmarks:
//     "doc"  -> "doc <length> <fnv1a64 hex>"   (also printed on the console)
//     "text" -> "text <length>\n" followed by the document bytes
//     "save" -> "saved <length>" after writing the document to the disk
//     "reach A.B.C.D PORT" -> "reach ok" or "reach failed <why>"
// - With --probe A.B.C.D:PORT,... the F4 key tries each target and appends
//   what it reached to the document (notepad_render.h), as typed text.
// - Keys beyond typing (notepad_render.h): F2 saves to the disk and marks
//   the screen saved, Escape closes the document (a blank screen; other
//   keys are ignored), F3 opens it again from the disk. The mode is saved
//   with the document, so a replica booted from the disk shows the same.
// - With --disk DEV the document is loaded from DEV at start and "save"
//   writes it there: sector 0 holds magic "NPAD", version, length,
//   checksum and the mode (byte 20); the text follows from byte 512.
// - With --autosave as well, every edit is written there (and fsynced)
//   before the screen is redrawn, so whenever the notepad has handled every
//   key sent, its whole state is on the disk: a replica may boot from a
//   checkpoint's disk (slingshot-home service create --state-on-disk).
// Nothing here reads a clock or a random source, so two runs fed the same
// keys show the same pixels.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <rfb/rfb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "notepad_render.h"

namespace {

constexpr int kRfbPort = 5900;
constexpr int kControlPort = 5901;
constexpr uint32_t kDiskVersion = 1;

struct State {
  notepad::Font font;
  std::string doc;
  std::vector<uint32_t> fb;
  rfbScreenInfoPtr screen = nullptr;
  std::string disk;
  bool autosave = false;
  bool dirty = true;
  notepad::Mode mode = notepad::Mode::kEditing;
  std::vector<std::string> probes;  // "A.B.C.D PORT"
};
State g;

std::string SaveToDisk();

// Draws the new screen and hands libvncserver only the rectangle that
// changed, as a real toolkit's damage tracking would: a key then costs an
// update of a few character cells, not of the whole 640x400 screen. A
// redraw that changed nothing still sends one pixel, so every key the
// notepad acted on gets an answer.
void Redraw() {
  static std::vector<uint32_t> next(g.fb.size());
  notepad::Render(g.font, g.doc, next.data(), g.mode);
  int x0 = notepad::kWidth, y0 = notepad::kHeight, x1 = -1, y1 = -1;
  for (int y = 0; y < notepad::kHeight; ++y) {
    const uint32_t* a = &g.fb[size_t(y) * notepad::kWidth];
    const uint32_t* b = &next[size_t(y) * notepad::kWidth];
    if (memcmp(a, b, notepad::kWidth * sizeof(uint32_t)) == 0) continue;
    int l = 0, r = notepad::kWidth - 1;
    while (a[l] == b[l]) ++l;
    while (a[r] == b[r]) --r;
    x0 = std::min(x0, l);
    x1 = std::max(x1, r);
    y0 = std::min(y0, y);
    y1 = y;
  }
  if (x1 < 0) {
    x0 = y0 = 0;
    x1 = y1 = 0;
  }
  if (y1 >= y0 && x1 >= 0) {
    memcpy(&g.fb[size_t(y0) * notepad::kWidth], &next[size_t(y0) * notepad::kWidth],
           size_t(y1 - y0 + 1) * notepad::kWidth * sizeof(uint32_t));
  }
  rfbMarkRectAsModified(g.screen, x0, y0, x1 + 1, y1 + 1);
  g.dirty = false;
}

void LoadFromDisk();
std::string Reach(const std::string& args);

// Applies one key to the document and the mode; whether anything changed.
bool HandleKey(uint32_t key) {
  using notepad::Mode;
  if (key == notepad::kKeyOpen) {  // reloads from the disk, closed or not
    if (!g.disk.empty()) LoadFromDisk();
    g.mode = Mode::kEditing;
    return true;
  }
  if (g.mode == Mode::kClosed) return false;
  if (key == notepad::kKeyClose) {
    g.mode = Mode::kClosed;
    return true;
  }
  if (key == notepad::kKeySave) {
    g.mode = Mode::kSaved;
    if (!g.disk.empty() && !g.autosave) {
      std::string r = SaveToDisk();
      if (r.rfind("saved", 0) != 0) printf("notepad: save: %s\n", r.c_str());
    }
    return true;  // redrawn even if it was saved already: the user sees an answer
  }
  if (key == notepad::kKeyProbe) {
    if (g.probes.empty()) return false;
    for (const std::string& p : g.probes) {
      std::string shown = p;
      std::replace(shown.begin(), shown.end(), ' ', ':');
      std::string line = "[" + shown + (Reach(p) == "reach ok" ? " ok]" : " no]");
      if (g.doc.size() + line.size() <= notepad::kMaxDocument) g.doc += line;
    }
    g.mode = Mode::kEditing;
    return true;
  }
  if (!notepad::ApplyKey(key, &g.doc)) return false;
  g.mode = Mode::kEditing;
  return true;
}

void OnKey(rfbBool down, rfbKeySym key, rfbClientPtr) {
  if (down && HandleKey(static_cast<uint32_t>(key))) {
    g.dirty = true;
    if (g.autosave) {
      std::string r = SaveToDisk();
      if (r.rfind("saved", 0) != 0) printf("notepad: autosave: %s\n", r.c_str());
    }
  }
}

void PutLe32(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetLe32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
         uint32_t(p[3]) << 24;
}

std::string SaveToDisk() {
  if (g.disk.empty()) return "error no disk (start with --disk DEV)";
  std::vector<uint8_t> buf(512 + g.doc.size());
  memcpy(buf.data(), "NPAD", 4);
  PutLe32(&buf[4], kDiskVersion);
  PutLe32(&buf[8], g.doc.size());
  uint64_t sum = notepad::Checksum(g.doc);
  PutLe32(&buf[12], sum);
  PutLe32(&buf[16], sum >> 32);
  PutLe32(&buf[20], static_cast<uint32_t>(g.mode));
  memcpy(buf.data() + 512, g.doc.data(), g.doc.size());
  int fd = open(g.disk.c_str(), O_WRONLY);
  if (fd < 0) return "error cannot open " + g.disk + ": " + strerror(errno);
  ssize_t n = pwrite(fd, buf.data(), buf.size(), 0);
  bool ok = n == static_cast<ssize_t>(buf.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok) return "error cannot write " + g.disk;
  return "saved " + std::to_string(g.doc.size());
}

void LoadFromDisk() {
  int fd = open(g.disk.c_str(), O_RDONLY);
  if (fd < 0) {
    printf("notepad: cannot open %s: %s\n", g.disk.c_str(), strerror(errno));
    return;
  }
  uint8_t head[512];
  if (pread(fd, head, sizeof head, 0) == sizeof head &&
      memcmp(head, "NPAD", 4) == 0) {
    uint32_t len = GetLe32(&head[8]);
    uint64_t sum = GetLe32(&head[12]) | uint64_t(GetLe32(&head[16])) << 32;
    std::string doc(len <= notepad::kMaxDocument ? len : 0, '\0');
    if (GetLe32(&head[4]) != kDiskVersion || len > notepad::kMaxDocument ||
        pread(fd, doc.data(), len, 512) != static_cast<ssize_t>(len) ||
        notepad::Checksum(doc) != sum) {
      printf("notepad: the document on %s is damaged; starting empty\n",
             g.disk.c_str());
    } else {
      g.doc = std::move(doc);
      uint32_t mode = GetLe32(&head[20]);  // 0 (editing) on disks of before modes
      g.mode = mode <= 2 ? static_cast<notepad::Mode>(mode) : notepad::Mode::kEditing;
      printf("notepad: loaded %u bytes from %s\n", len, g.disk.c_str());
    }
  }
  close(fd);
}

std::string DocLine() {
  char line[80];
  snprintf(line, sizeof line, "doc %zu %016" PRIx64, g.doc.size(),
           notepad::Checksum(g.doc));
  return line;
}

// "reach A.B.C.D PORT": whether a TCP connection from inside the guest to
// that address gets through within 2 s: "reach ok", or "reach failed WHY".
// Tests check what a replica's network lets it reach.
std::string Reach(const std::string& args) {
  char host[32];
  int port = 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (sscanf(args.c_str(), "%31s %d", host, &port) != 2 || port <= 0 || port > 65535 ||
      inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    return "error reach wants an IPv4 address and a port";
  }
  a.sin_port = htons(static_cast<uint16_t>(port));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::string("reach failed ") + strerror(errno);
  std::string r = "reach ok";
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (errno != EINPROGRESS) {
      r = std::string("reach failed ") + strerror(errno);
    } else {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      if (poll(&p, 1, 2000) != 1) r = "reach failed timeout";
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) r = std::string("reach failed ") + strerror(err);
    }
  }
  close(fd);
  return r;
}

// One control connection: reads a command line, answers, closes.
void ServeControl(int fd) {
  std::string line;
  char c;
  while (line.size() < 64 && read(fd, &c, 1) == 1 && c != '\n') line += c;
  std::string reply;
  if (line == "doc") {
    reply = DocLine() + "\n";
    printf("notepad: %s\n", DocLine().c_str());
    fflush(stdout);
  } else if (line == "text") {
    reply = "text " + std::to_string(g.doc.size()) + "\n" + g.doc;
  } else if (line == "save") {
    reply = SaveToDisk() + "\n";
  } else if (line.rfind("reach ", 0) == 0) {
    reply = Reach(line.substr(6)) + "\n";
  } else {
    reply = "error unknown command (doc, text, save, reach)\n";
  }
  size_t off = 0;
  while (off < reply.size()) {
    ssize_t n = write(fd, reply.data() + off, reply.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  close(fd);
}

int ListenTcp(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(fd, 8) != 0) {
    perror("notepad: control port");
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  std::string font_path = "/usr/share/notepad.psf";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--font" && i + 1 < argc) {
      font_path = argv[++i];
    } else if (a == "--disk" && i + 1 < argc) {
      g.disk = argv[++i];
    } else if (a == "--autosave") {
      g.autosave = true;
    } else if (a == "--probe" && i + 1 < argc) {
      std::string list = argv[++i];
      for (size_t at = 0; at <= list.size();) {
        size_t comma = std::min(list.find(',', at), list.size());
        std::string t = list.substr(at, comma - at);
        size_t colon = t.rfind(':');
        if (colon == std::string::npos) {
          fprintf(stderr, "notepad: --probe wants A.B.C.D:PORT,...; got '%s'\n", t.c_str());
          return 2;
        }
        g.probes.push_back(t.substr(0, colon) + " " + t.substr(colon + 1));
        at = comma + 1;
      }
    } else {
      fprintf(stderr, "usage: %s [--font PSF] [--disk DEV [--autosave]] [--probe A.B.C.D:PORT,...]\n", argv[0]);
      return 2;
    }
  }
  std::string error;
  auto font = notepad::LoadPsf(font_path, &error);
  if (!font) {
    fprintf(stderr, "notepad: %s\n", error.c_str());
    return 1;
  }
  g.font = std::move(*font);
  if (!g.disk.empty()) LoadFromDisk();

  rfbLogEnable(0);
  g.fb.resize(size_t(notepad::kWidth) * notepad::kHeight);
  g.screen = rfbGetScreen(nullptr, nullptr, notepad::kWidth, notepad::kHeight,
                          8, 3, 4);
  g.screen->desktopName = "slingshot-notepad";
  g.screen->frameBuffer = reinterpret_cast<char*>(g.fb.data());
  g.screen->serverFormat.redShift = 16;
  g.screen->serverFormat.greenShift = 8;
  g.screen->serverFormat.blueShift = 0;
  g.screen->alwaysShared = TRUE;
  g.screen->kbdAddEvent = OnKey;
  // No pointer sprite: the screen must be a function of the document alone.
  g.screen->cursor = nullptr;
  g.screen->port = kRfbPort;
  g.screen->ipv6port = 0;
  rfbInitServer(g.screen);
  int control = ListenTcp(kControlPort);
  if (control < 0 || !rfbIsActive(g.screen)) return 1;
  Redraw();
  printf("notepad: ready rfb=%d control=%d %s\n", kRfbPort, kControlPort,
         DocLine().c_str());
  fflush(stdout);

  for (;;) {
    rfbProcessEvents(g.screen, 10000);
    if (g.dirty) Redraw();
    pollfd p{control, POLLIN, 0};
    while (poll(&p, 1, 0) == 1) {
      int c = accept4(control, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) break;
      ServeControl(c);
    }
  }
}
