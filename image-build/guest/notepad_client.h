// Host-side helpers for VMs running the notepad test guest
// (image-build/guest-image.sh): specs, the notepad's control port, and an
// RFB client (libvncclient) that types and reads the screen.
#ifndef SLINGSHOT_IMAGE_BUILD_GUEST_NOTEPAD_CLIENT_H_
#define SLINGSHOT_IMAGE_BUILD_GUEST_NOTEPAD_CLIENT_H_

#include <rfb/rfbclient.h>

#include <chrono>
#include <string>
#include <vector>

#include "notepad_render.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot::testing {

constexpr uint16_t kRfbPort = 5900;
constexpr uint16_t kControlPort = 5901;

// The guest image built into the build directory ($SLINGSHOT_GUEST_DIR
// overrides it).
std::string GuestDir();

// A spec for the notepad guest: 128 MiB, one vCPU, ports 5900 and 5901.
VmSpec NotepadSpec(const std::string& name, const std::string& run_dir);

// One request on the notepad's control port ("doc", "text", "save"); the
// whole answer. Error if the port does not answer.
Result<std::string> Control(const Endpoint& ep, const std::string& command);
// The document's text (the "text" command, without its header).
Result<std::string> DocumentText(const Endpoint& ep);
// Waits until the control port answers (the guest has booted).
Status WaitForNotepad(const Endpoint& ep, std::chrono::milliseconds timeout);
class RfbSession;
// Waits until the document equals want; the error shows the last text seen.
// With rfb, keeps reading that session's screen updates meanwhile: a VNC
// client that stops reading stalls the notepad once the socket buffers
// fill (libvncserver then blocks writing its update, and drops the client
// after 20 s), as any real client would keep reading.
Status WaitForText(const Endpoint& ep, const std::string& want,
                   std::chrono::milliseconds timeout, RfbSession* rfb = nullptr);

// A real RFB client session.
class RfbSession {
 public:
  static Result<std::unique_ptr<RfbSession>> Connect(const Endpoint& ep);
  ~RfbSession();
  // Sends each character as a key press and release (newline as Return),
  // reading screen updates between keys.
  Status Type(const std::string& text);
  // Handles the server messages that arrive within timeout_ms.
  Status Pump(int timeout_ms);
  // Screen updates handled so far.
  uint64_t updates() const { return updates_; }
  // Presses and releases key, then reads until the next screen update:
  // the keystroke-to-screen time in ms. Drain first so that an earlier
  // update is not mistaken for this key's.
  // With a modifier (e.g. 0xffe3, Control_L), it is held around the key.
  Result<double> KeyToScreenMs(uint32_t keysym, int timeout_ms, uint32_t modifier = 0);
  // Presses and releases key, then reads screen updates until the
  // framebuffer equals want (notepad::kWidth x kHeight, 0x00RRGGBB): the
  // keystroke-to-screen time in ms, exactly as the viewer sees it.
  Result<double> KeyUntilScreenMs(uint32_t keysym, const std::vector<uint32_t>& want, int timeout_ms);
  // Whether the framebuffer equals want; *differing gets the pixels that do not.
  bool ScreenEquals(const std::vector<uint32_t>& want, size_t* differing = nullptr) const;
  // Reads until the server has been quiet for quiet_ms.
  Status Drain(int quiet_ms);
  // Writes bytes to the server as they are (for tests of malformed or
  // partial client messages).
  Status SendRaw(const uint8_t* data, size_t n);
  // Writes the framebuffer as a binary PPM (P6) image.
  Status SavePpm(const std::string& path) const;
  // Asks for a full update and waits until the framebuffer equals what
  // notepad::Render draws for `text` in `mode`; the error counts differing
  // pixels.
  Status WaitForScreen(const notepad::Font& font, const std::string& text,
                       std::chrono::milliseconds timeout, notepad::Mode mode = notepad::Mode::kEditing);

 private:
  explicit RfbSession(rfbClient* c) : client_(c) {}
  static void OnUpdateDone(rfbClient* c);
  rfbClient* client_;
  uint64_t updates_ = 0;
};

// Pids of live processes whose command line (arguments joined by spaces)
// contains needle.
std::vector<int> ProcessesMatching(const std::string& needle);

}  // namespace slingshot::testing

#endif  // SLINGSHOT_IMAGE_BUILD_GUEST_NOTEPAD_CLIENT_H_
