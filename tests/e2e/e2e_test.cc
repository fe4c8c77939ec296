// End to end (DESIGN.md §5): real processes, real QEMU TCG guests,
// client / surrogates / home each in a network namespace (world.sh, a ctest
// fixture, builds them and runs the home daemon with the notepad service).
//
// Each test starts its own proxy (and agents) on the world's one client
// state, so the event log and the document carry over from test to test:
// every test reads the document at home first and checks that it ends as
// that text plus exactly what the test typed. Tests may run in any order.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "notepad_client.h"
#include "process.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/keys.h"
#include "slingshot/net/tls.h"
#include "slingshot/net/transport.h"
#include "slingshot/store/manifest.h"

namespace slingshot::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

const std::string kBuild = SLINGSHOT_BUILD_DIR;
const std::string kWorld = kBuild + "/e2e-world";
const std::string kState = kWorld + "/client";
const std::string kClient = kBuild + "/client/slingshot-client";
const std::string kAgent = kBuild + "/dom0-agent/slingshot-agent";
// The client reaches home through a link emulator in its own namespace (a
// WAN: 40 ms, 50 Mbit/s), so a surrogate on the hotspot answers faster.
const std::string kHomeViaWan = "10.77.0.2:17390";

// Runs f with this thread in network namespace ns (sockets made inside stay there).
template <class F>
auto InNetns(const std::string& ns, F f) {
  int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int target = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(target, 0) << "no namespace " << ns << " (is the e2e world up?)";
  EXPECT_EQ(setns(target, CLONE_NEWNET), 0);
  auto r = f();
  EXPECT_EQ(setns(self, CLONE_NEWNET), 0);
  ::close(self);
  ::close(target);
  return r;
}

// The environment setting that points a program at the D-Bus system bus of
// namespace ns (world.sh runs one, with an avahi-daemon, per namespace).
std::string BusOf(const std::string& ns) {
  return "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + kWorld + "/bus-" + ns.substr(3);
}

// Where the home's primary answers its notepad control port (in ss-home).
Endpoint HomeControl() {
  std::ifstream in(kWorld + "/home/services/notepad/endpoints");
  std::string port, addr;
  while (in >> port >> addr) {
    if (port == "5901") return Endpoint{addr.substr(0, addr.find(':')), uint16_t(std::stoi(addr.substr(addr.find(':') + 1)))};
  }
  return {};
}

Result<std::string> HomeDoc() {
  return InNetns("ss-home", [] { return DocumentText(HomeControl()); });
}

// Starts the world's home daemon again (world.sh's flags; its pid in
// home.pid), its output appended to home.log.
void StartWorldHome() {
  int rc;
  Shell("ip netns exec ss-home setsid bash " + kWorld + "/home.cmd >>" + kWorld + "/home.log 2>&1 </dev/null & echo $! >" +
            kWorld + "/home.pid",
        &rc);
}

Status WaitHomeDoc(const std::string& want, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  std::string last;
  while (Clock::now() < end) {
    auto d = HomeDoc();
    if (d.ok() && *d == want) return Status::OK();
    if (d.ok()) last = *d;
    std::this_thread::sleep_for(200ms);
  }
  return Status::Unavailable("home document is \"" + last + "\", want \"" + want + "\"");
}

std::string StatusOf(const std::string& state) { return Shell(kClient + " status --state-dir " + state); }
std::string StatusText() { return StatusOf(kState); }

// The replica the proxy shows, from `slingshot-client status`.
std::string Leader() {
  std::istringstream in(StatusText());
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("replica ", 0) == 0 && line.find(" leader") != std::string::npos) {
      return line.substr(8, line.find(' ', 8) - 8);
    }
  }
  return "";
}

bool WaitLeader(const std::string& name, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (Leader() == name) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// The proxy's log, "log FIRST..LAST" in its status: FIRST is one past the
// seq the home's last checkpoint covers. {0, 0} when there is no status.
std::pair<uint64_t, uint64_t> LogRange() {
  std::string st = StatusText();
  size_t at = st.find(" log ");
  if (at == std::string::npos) return {0, 0};
  size_t dots = st.find("..", at);
  return {std::stoull(st.substr(at + 5)), std::stoull(st.substr(dots + 2))};
}

// The last seq in the proxy's log.
uint64_t LastSeq() { return LogRange().second; }

bool WaitStatus(const std::string& needle, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (StatusText().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kWorld + "/home.pid")) << "the e2e world is not up (ctest runs tests/e2e/world.sh)";
    wan_ = std::make_unique<Process>(
        std::vector<std::string>{kBuild + "/tests/support/slingshot-linkemu", kHomeViaWan, "10.77.0.1:7390", "40", "50"},
        kWorld + "/linkemu.log", "ss-client");
    ASSERT_TRUE(wan_->WaitFor("relaying", 10s)) << wan_->Output();
    auto d = HomeDoc();
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    doc_ = *d;
  }
  void TearDown() override {
    rfb_.reset();
    if (proxy_) proxy_->Kill(SIGTERM);
    agents_.clear();
    wan_.reset();
  }

  void StartProxy(const std::vector<std::string>& extra = {}) {
    if (HasFatalFailure()) return;
    std::vector<std::string> argv{kClient, "proxy", "notepad", "--state-dir", kState, "--home", kHomeViaWan};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proxy_ = std::make_unique<Process>(argv, kWorld + "/proxy-" + std::to_string(++proxies_) + ".log", "ss-client");
    ASSERT_TRUE(proxy_->WaitFor("proxy ready", 120s)) << proxy_->Output();
    Result<std::unique_ptr<RfbSession>> s = Status::Unavailable("not tried");
    for (int i = 0; i < 20 && !s.ok(); ++i) {
      if (i) std::this_thread::sleep_for(250ms);
      s = InNetns("ss-client", [] { return RfbSession::Connect(Endpoint{"127.0.0.1", 5900}); });
    }
    ASSERT_TRUE(s.ok()) << s.status().ToString() << "\n" << proxy_->Output();
    rfb_ = std::move(*s);
  }

  Process* StartAgent(const std::string& ns, const std::string& ip, const std::string& name,
                      const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv{"env", BusOf(ns), kAgent, "run", "--listen", ip + ":7391", "--name", name, "--cache",
                                  kWorld + "/" + name + "-cache", "--accel", "tcg"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    agents_.push_back(std::make_unique<Process>(argv, kWorld + "/" + name + ".log", ns));
    EXPECT_TRUE(agents_.back()->WaitFor("listening", 20s)) << agents_.back()->Output();
    return agents_.back().get();
  }

  std::string Use(const std::string& addr, int* rc) {
    return Shell(kClient + " use " + addr + " --state-dir " + kState, rc);
  }

  // Proxy, agent "cafe" in ss-surr, and a replica there; then keeps typing
  // (each key is a new sample of each replica's speed; on a loaded machine
  // the first are noisy) until the cafe leads. Returns what it typed.
  std::string UseCafeUntilItLeads() {
    StartProxy();
    StartAgent("ss-surr", "10.77.0.3", "cafe");
    int rc;
    std::string out = Use("10.77.0.3:7391", &rc);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("ready replica cafe"), std::string::npos) << out;
    // Until the cafe has led for five keys running: a replica whose RAM
    // is still arriving may lead on one key and lose it on the next (a key
    // that faults in pages takes longer).
    std::string typed;
    auto until = Clock::now() + 90s;
    for (int leading = 0; rc == 0 && leading < 5 && Clock::now() < until;) {
      typed += static_cast<char>('a' + typed.size() % 26);
      Type(typed.substr(typed.size() - 1));
      leading = Leader() == "cafe" ? leading + 1 : 0;
    }
    return typed;
  }

  // Types text through the proxy, one key at a time, like a person.
  void Type(const std::string& text, int gap_ms = 15) {
    ASSERT_TRUE(rfb_) << "no VNC session with the proxy";
    for (char c : text) {
      ASSERT_TRUE(rfb_->Type(std::string(1, c)).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
    }
  }

  std::string doc_;
  std::unique_ptr<Process> wan_, proxy_;
  std::vector<std::unique_ptr<Process>> agents_;
  std::unique_ptr<RfbSession> rfb_;
  int proxies_ = 0;
};

TEST_F(E2eTest, TypingThroughTheProxyReachesThePrimaryAtHome) {
  StartProxy();
  Type("hello home. ");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "hello home. ", 60s).ok()) << proxy_->Output();
  EXPECT_NE(StatusText().find("replica home"), std::string::npos);
}

TEST_F(E2eTest, AViewerThatDiesMidMessageLosesNoInputItSentWhole) {
  // The proxy holds an input while the viewer's next one is already
  // arriving, so that one fdatasync covers both. Here the next never
  // completes: the viewer sends a key press and the first byte of another
  // key event, then is gone. The press must still reach the replicas.
  StartProxy();
  auto v = InNetns("ss-client", [] { return RfbSession::Connect(Endpoint{"127.0.0.1", 5900}); });
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  const uint8_t press_then_torn[9] = {4, 1, 0, 0, 0, 0, 0, 'z', 4};  // KeyEvent down 'z', then a type byte
  ASSERT_TRUE((*v)->SendRaw(press_then_torn, sizeof(press_then_torn)).ok());
  v->reset();
  EXPECT_TRUE(WaitHomeDoc(doc_ + "z", 60s).ok()) << proxy_->Output();
  // The proxy still takes whole inputs from the other viewer.
  Type("y");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "zy", 60s).ok()) << proxy_->Output();
}

TEST_F(E2eTest, SurrogateLeadsThenDiesMidTypingAndNothingIsLost) {
  // The surrogate is near; home is 40 ms away: once inputs show it is
  // faster, the surrogate leads.
  std::string lead = UseCafeUntilItLeads();
  ASSERT_EQ(Leader(), "cafe") << StatusText() << proxy_->Output();

  const std::string text = "the quick brown fox jumps over the lazy dog";
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);
    for (int pid : ProcessesMatching("-name replica-")) ::kill(pid, SIGKILL);
    agents_[0]->Kill(SIGKILL);
  });
  Type(text, 20);
  killer.join();
  EXPECT_TRUE(WaitHomeDoc(doc_ + lead + text, 90s).ok()) << proxy_->Output();
  EXPECT_TRUE(WaitLeader("home", 5s)) << StatusText();
  EXPECT_EQ(StatusText().find("cafe"), std::string::npos) << StatusText();
  EXPECT_NE(proxy_->Output().find("replica cafe dropped"), std::string::npos) << proxy_->Output();
}

TEST_F(E2eTest, ProxyKilledAndRestartedRecoversItsLog) {
  StartProxy();
  Type("before crash ");
  ASSERT_TRUE(WaitHomeDoc(doc_ + "before crash ", 60s).ok());
  // Keys the proxy has logged but perhaps not yet sent when it dies: each
  // key is a press and a release.
  uint64_t before = LastSeq();
  Type("xyz", 0);
  auto end = Clock::now() + 10s;
  while (LastSeq() < before + 6 && Clock::now() < end) std::this_thread::sleep_for(1ms);
  ASSERT_GE(LastSeq(), before + 6);
  proxy_->Kill(SIGKILL);
  rfb_.reset();
  StartProxy();
  Type(" after");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "before crash xyz after", 60s).ok()) << proxy_->Output();
}

TEST_F(E2eTest, HomeRestartBringsThePrimaryBackFromCheckpointAndLog) {
  StartProxy();
  Type("kept ");
  ASSERT_TRUE(WaitHomeDoc(doc_ + "kept ", 60s).ok());
  // Stop the home, keep typing (the log holds it), start it again.
  int rc;
  Shell("kill -9 $(cat " + kWorld + "/home.pid)", &rc);
  Type("while home is down ");
  StartWorldHome();
  Type("and after");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "kept while home is down and after", 120s).ok()) << proxy_->Output();
  // The primary came back from its checkpoint, and the proxy replayed the rest.
  auto home_log = ReadFileBounded(kWorld + "/home.log", 1 << 20);
  ASSERT_TRUE(home_log.ok());
  EXPECT_NE(std::string(home_log->begin(), home_log->end()).find("restored from checkpoint"), std::string::npos);
  EXPECT_NE(proxy_->Output().find("replica home attached"), std::string::npos);
}

TEST_F(E2eTest, ASecondSurrogateJoinsWhileTheFirstRuns) {
  StartProxy();
  StartAgent("ss-surr", "10.77.0.3", "cafe");
  StartAgent("ss-surr2", "10.77.0.4", "library");
  int rc;
  std::string out = Use("10.77.0.3:7391", &rc);
  ASSERT_EQ(rc, 0) << out;
  Type("one ");
  out = Use("10.77.0.4:7391", &rc);
  ASSERT_EQ(rc, 0) << out;
  Type("two");
  ASSERT_TRUE(WaitStatus("replica library consumed", 10s));
  std::string st = StatusText();
  EXPECT_NE(st.find("replica cafe"), std::string::npos) << st;
  EXPECT_NE(st.find("replica library"), std::string::npos) << st;
  EXPECT_TRUE(WaitHomeDoc(doc_ + "one two", 60s).ok());
  // Each agent answers a status request: its replica, for whom, and what it fetched.
  std::string as = InNetns("ss-client", [] { return Shell(kClient + " agent-status 10.77.0.4:7391 --state-dir " + kState); });
  EXPECT_NE(as.find("surrogate library"), std::string::npos) << as;
  EXPECT_NE(as.find("notepad for alice"), std::string::npos) << as;
  size_t homes = as.find("fetched from homes");
  ASSERT_NE(homes, std::string::npos) << as;
  std::string line = as.substr(homes, as.find('\n', homes) - homes);
  EXPECT_NE(line.substr(line.size() - 4), " 0 B") << as;  // the replica's state came from home
  // Leaving the first hotspot: its replica goes, typing goes on.
  agents_[0]->Kill(SIGKILL);
  Type(" three");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "one two three", 60s).ok());
}

// An agent without the memory for the replica refuses it before fetching
// anything, says what is short, and the user goes on at home; its status
// shows its capacity.
TEST_F(E2eTest, AnAgentWithoutRoomRefusesTheReplicaAndTheUserGoesOnAtHome) {
  StartProxy();
  StartAgent("ss-surr", "10.77.0.3", "cafe", {"--replica-memory-mb", "150"});
  int rc;
  std::string out = Use("10.77.0.3:7391", &rc);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("cannot host notepad for alice: it needs"), std::string::npos) << out;
  EXPECT_NE(out.find("and 150 MiB of the 150 MiB for replicas are free"), std::string::npos) << out;
  Type("still at home");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "still at home", 60s).ok());
  EXPECT_EQ(StatusText().find("replica cafe"), std::string::npos) << StatusText();
  std::string as = InNetns("ss-client", [] { return Shell(kClient + " agent-status 10.77.0.3:7391 --state-dir " + kState); });
  EXPECT_NE(as.find("0 of 8"), std::string::npos) << as;
  EXPECT_NE(as.find("0 MiB of 150 MiB for replicas taken, 150 MiB free"), std::string::npos) << as;
}

// --- capabilities: talk to an agent directly, as a client would ---

struct Pairing {
  TlsCredentials creds;
  Bytes manifest_key;
};
Pairing LoadPairing() {
  Pairing p;
  p.creds = *TlsCredentials::Load(kState + "/pairing");
  auto k = PublicKey::Load(kState + "/pairing/manifest-key.pub");
  p.manifest_key.assign(k->raw().begin(), k->raw().end());
  return p;
}

// Connects to the agent at 10.77.0.3 as client (from ss-client's thread)
// and asks it for a notepad replica with cap.
Result<std::unique_ptr<Connection>> SendInstantiate(const TlsCredentials& client, const TlsCredentials& cap,
                                                    const Bytes& manifest_key, const Bytes& signed_manifest = {}) {
  ConnectOptions o;
  o.verify_server_ca = false;
  SLINGSHOT_ASSIGN_OR_RETURN(auto c, Connection::Connect("10.77.0.3", 7391, client, o));
  wire::Instantiate in;
  in.service = "notepad";
  in.home_host = "10.77.0.1";
  in.home_port = 7390;
  in.ca_pem = client.ca_pem;
  in.manifest_key = manifest_key;
  in.cert_pem = cap.cert_pem;
  in.key_pem = cap.key_pem;
  in.signed_manifest = signed_manifest;
  SLINGSHOT_RETURN_IF_ERROR(c->Send(1, in));
  return c;
}

// Sends Instantiate with cap to the agent at 10.77.0.3 and returns how it ended.
Status Instantiate(const TlsCredentials& client, const TlsCredentials& cap, const Bytes& manifest_key,
                   const Bytes& signed_manifest = {}) {
  return InNetns("ss-client", [&]() -> Status {
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, SendInstantiate(client, cap, manifest_key, signed_manifest));
    for (;;) {
      SLINGSHOT_ASSIGN_OR_RETURN(Frame f, c->Receive(120000));
      if (auto* e = std::get_if<wire::Error>(&f.message)) return e->ToStatus("agent");
      if (std::holds_alternative<wire::Attached>(f.message)) return Status::OK();
    }
  });
}

// The home's capability for notepad; *manifest gets the signed manifest
// that comes with it.
Result<TlsCredentials> CapabilityFromHome(const TlsCredentials& client, Bytes* manifest = nullptr) {
  return InNetns("ss-client", [&]() -> Result<TlsCredentials> {
    ConnectOptions o;
    o.expected_role = Role::kHome;
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, Connection::Connect("10.77.0.1", 7390, client, o));
    SLINGSHOT_RETURN_IF_ERROR(c->Send(1, wire::GetCapability{"notepad", 300}));
    SLINGSHOT_ASSIGN_OR_RETURN(wire::Message m, c->Expect(1, wire::MessageType::kCapability));
    auto& cap = std::get<wire::Capability>(m);
    if (manifest) *manifest = cap.signed_manifest;
    return TlsCredentials{client.ca_pem, cap.cert_pem, cap.key_pem};
  });
}

TEST_F(E2eTest, ForgedExpiredAndReplayedCapabilitiesAndAWrongManifestKeyAreRefused) {
  StartAgent("ss-surr", "10.77.0.3", "cafe");
  Pairing p = LoadPairing();
  auto home_ca = CertificateAuthority::Load(kWorld + "/home/tls/ca");
  ASSERT_TRUE(home_ca.ok());

  // Forged: a capability from another CA.
  auto mallory = CertificateAuthority::Create("mallory", 3600);
  auto forged = mallory->IssueCapability(Capability{"notepad", "alice", 0, ""}, 300);
  Status s = Instantiate(p.creds, *forged, p.manifest_key);
  EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("not issued by the home's CA"), std::string::npos) << s.ToString();

  // Forged with a matching fake CA: the agent cannot tell, the home can.
  TlsCredentials fake_client = *mallory->Issue("alice", Role::kClient, 300);
  s = Instantiate(fake_client, *forged, p.manifest_key);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << s.ToString();

  // Expired.
  auto expired = home_ca->IssueCapability(Capability{"notepad", "alice", 0, ""}, -60);
  s = Instantiate(p.creds, *expired, p.manifest_key);
  EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("expired"), std::string::npos) << s.ToString();

  // Another device's capability (even one of the same user's).
  auto phones = CapabilityFromHome(*home_ca->IssueClient("phone", "alice", 300));
  ASSERT_TRUE(phones.ok()) << phones.status().ToString();
  s = Instantiate(p.creds, *phones, p.manifest_key);
  EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("issued to client \"phone\""), std::string::npos) << s.ToString();

  // A manifest not signed by the key the client trusts (as a tampered one).
  auto cap = CapabilityFromHome(p.creds);
  ASSERT_TRUE(cap.ok()) << cap.status().ToString();
  auto other = SigningKey::Generate();
  Bytes wrong(other->public_key().raw().begin(), other->public_key().raw().end());
  s = Instantiate(p.creds, *cap, wrong);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("manifest"), std::string::npos) << s.ToString();

  // The manifest that comes with a capability verifies with the home's key;
  // handed to the agent damaged, it is refused as a fetched one would be.
  Bytes carried;
  auto cap3 = CapabilityFromHome(p.creds, &carried);
  ASSERT_TRUE(cap3.ok());
  ASSERT_FALSE(carried.empty());
  auto key = PublicKey::FromRaw(p.manifest_key);
  ASSERT_TRUE(key.ok());
  auto carried_m = VerifyManifest(carried, *key);
  ASSERT_TRUE(carried_m.ok()) << carried_m.status().ToString();
  EXPECT_EQ(carried_m->service_id, "notepad");
  carried[carried.size() / 2] ^= 1;
  s = Instantiate(p.creds, *cap3, p.manifest_key, carried);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("manifest"), std::string::npos) << s.ToString();

  // Replayed: a capability is good for one replica.
  Bytes carried2;
  auto cap2 = CapabilityFromHome(p.creds, &carried2);
  ASSERT_TRUE(cap2.ok());
  std::thread first([&] { EXPECT_TRUE(Instantiate(p.creds, *cap2, p.manifest_key, carried2).ok()); });
  first.join();
  s = Instantiate(p.creds, *cap2, p.manifest_key);
  EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("already used"), std::string::npos) << s.ToString();
}

TEST_F(E2eTest, TheHomeGivesASurrogateWithoutACapabilityNothing) {
  auto home_ca = CertificateAuthority::Load(kWorld + "/home/tls/ca");
  ASSERT_TRUE(home_ca.ok());
  // A surrogate certificate with no capability scope.
  TlsCredentials bare = *home_ca->Issue("hotspot", Role::kSurrogate, 300);
  Status s = InNetns("ss-surr", [&]() -> Status {
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, Connection::Connect("10.77.0.1", 7390, bare));
    SLINGSHOT_RETURN_IF_ERROR(c->Send(1, wire::GetRef{"manifest/notepad"}));
    return c->Expect(1, wire::MessageType::kRefData).status();
  });
  EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("holds no capability"), std::string::npos) << s.ToString();
  // A capability for notepad does not open other refs.
  Pairing p = LoadPairing();
  auto cap = CapabilityFromHome(p.creds);
  ASSERT_TRUE(cap.ok());
  s = InNetns("ss-surr", [&]() -> Status {
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, Connection::Connect("10.77.0.1", 7390, *cap));
    SLINGSHOT_RETURN_IF_ERROR(c->Send(1, wire::GetRef{"disk/notepad"}));
    return c->Expect(1, wire::MessageType::kRefData).status();
  });
  EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << s.ToString();
}

TEST_F(E2eTest, TheLogIsTruncatedWhenTheHomeCheckpoints) {
  StartProxy();
  std::string before = StatusText();
  Type(std::string(50, 'k'), 5);
  ASSERT_TRUE(WaitHomeDoc(doc_ + std::string(50, 'k'), 60s).ok());
  // The home checkpoints every 40 inputs (world.sh); the proxy drops what it covers.
  auto end = Clock::now() + 60s;
  bool truncated = false;
  while (Clock::now() < end && !truncated) {
    truncated = proxy_->Output().find("log truncated up to") != std::string::npos;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(truncated) << proxy_->Output();
}

// The daemon measures each service's share of the store after each garbage
// collection (every 10 s in the world), and `service list` shows it.
TEST_F(E2eTest, ServiceListShowsWhatEachServiceHoldsInTheStore) {
  StartProxy();
  Type(std::string(45, 'u'), 5);  // past --checkpoint-inputs: a checkpoint, then a collection
  ASSERT_TRUE(WaitHomeDoc(doc_ + std::string(45, 'u'), 60s).ok());
  const std::string list = kBuild + "/home/slingshot-home service list --services-dir " + kWorld + "/home/services";
  std::smatch m;
  std::string out;
  const std::regex line(R"(notepad +epoch [0-9]+ seq [0-9]+; store ([0-9.]+) (B|KiB|MiB|GiB), ([0-9.]+) (B|KiB|MiB|GiB) of it its own; ([0-9]+) checkpoints?, ([0-9]+) chunks)");
  for (auto end = Clock::now() + 60s; Clock::now() < end; std::this_thread::sleep_for(500ms)) {
    out = Shell(list);
    if (std::regex_search(out, m, line)) break;
  }
  ASSERT_FALSE(m.empty()) << out;
  EXPECT_GT(std::stod(m[1]), 0.0) << out;
  EXPECT_GE(std::stoi(m[5]), 1) << out;
  EXPECT_GT(std::stoi(m[6]), 0) << out;
}


// The agent's certificate fingerprint, from its "listening" line.
std::string AgentFingerprint(const Process& agent) {
  std::string out = agent.Output();
  size_t at = out.find("certificate ");
  return at == std::string::npos ? "" : out.substr(at + 12, 16);
}

TEST_F(E2eTest, SurrogatesAreFoundByDnsSdAndUsedByName) {
  Process* cafe = StartAgent("ss-surr", "10.77.0.3", "cafe");
  Process* library = StartAgent("ss-surr2", "10.77.0.4", "library");
  ASSERT_TRUE(cafe->WaitFor("advertised as", 20s)) << cafe->Output();
  ASSERT_TRUE(library->WaitFor("advertised as", 20s)) << library->Output();
  const std::string discover = "env " + BusOf("ss-client") + " " + kClient + " discover --state-dir " + kState;
  // Both answer on the client's network, each with the fingerprint its agent printed.
  std::string seen;
  auto until = Clock::now() + 20s;
  while (Clock::now() < until) {
    seen = Shell(discover);
    if (seen.find("cafe") != std::string::npos && seen.find("library") != std::string::npos) break;
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_NE(seen.find("10.77.0.3:7391"), std::string::npos) << seen;
  EXPECT_NE(seen.find("10.77.0.4:7391"), std::string::npos) << seen;
  ASSERT_EQ(AgentFingerprint(*cafe).size(), 16u) << cafe->Output();
  EXPECT_NE(seen.find(AgentFingerprint(*cafe)), std::string::npos) << seen;
  EXPECT_NE(seen.find(AgentFingerprint(*library)), std::string::npos) << seen;

  // The user picks the cafe by name; the proxy gets its address and pins
  // its advertised certificate.
  StartProxy();
  int rc;
  std::string out = Shell("env " + BusOf("ss-client") + " " + kClient + " use cafe --state-dir " + kState, &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("found at 10.77.0.3:7391"), std::string::npos) << out;
  EXPECT_NE(out.find("ready replica cafe"), std::string::npos) << out;
  Type("found by name");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "found by name", 60s).ok()) << proxy_->Output();
  EXPECT_TRUE(WaitStatus("replica cafe", 5s)) << StatusText();

  // A name no surrogate answers to gets a clear error naming those that do.
  out = Shell("env " + BusOf("ss-client") + " " + kClient + " use nowhere --discover-ms 1500 --state-dir " + kState, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("no surrogate called \"nowhere\""), std::string::npos) << out;
  EXPECT_NE(out.find("library"), std::string::npos) << out;

  // An agent that stops withdraws its advert.
  library->Kill(SIGTERM);
  until = Clock::now() + 20s;
  while (Clock::now() < until) {
    seen = Shell(discover);
    if (seen.find("library") == std::string::npos) break;
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_EQ(seen.find("library"), std::string::npos) << seen;
  EXPECT_NE(seen.find("cafe"), std::string::npos) << seen;
}

// Counts the occurrences of needle in hay.
size_t Count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

TEST_F(E2eTest, AnAgentAdvertisesAgainAfterAvahiDaemonRestarts) {
  Process* agent = StartAgent("ss-surr2", "10.77.0.4", "library");
  ASSERT_TRUE(agent->WaitFor("advertised as", 20s)) << agent->Output();
  // Stop the surrogate's avahi-daemon (as a package upgrade would), then
  // start it again the way world.sh does.
  int rc;
  // (netns-dns-sd.sh records the daemon's PID: only the world's own is stopped.)
  Shell("kill -TERM \"$(cat " + kWorld + "/avahi-surr2.pid)\"", &rc);
  ASSERT_EQ(rc, 0) << "no avahi-daemon in ss-surr2";
  ASSERT_TRUE(agent->WaitFor("lost avahi-daemon", 20s)) << agent->Output();
  Shell(std::string(SLINGSHOT_WORLD_SH) + " avahi " + kBuild + " surr2", &rc);
  ASSERT_EQ(rc, 0);
  auto until = Clock::now() + 30s;
  while (Count(agent->Output(), "advertised as") < 2 && Clock::now() < until) std::this_thread::sleep_for(200ms);
  EXPECT_EQ(Count(agent->Output(), "advertised as"), 2u) << agent->Output();
  std::string seen = Shell("env " + BusOf("ss-client") + " " + kClient + " discover --state-dir " + kState);
  EXPECT_NE(seen.find("10.77.0.4:7391"), std::string::npos) << seen;
}


// The surrogates' replica VMs (the agents name their QEMUs "replica-N").
size_t ReplicaVms() { return ProcessesMatching("-name replica-").size(); }

bool WaitReplicaVms(size_t n, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  while (ReplicaVms() != n && Clock::now() < end) std::this_thread::sleep_for(200ms);
  return ReplicaVms() == n;
}

TEST_F(E2eTest, TheClientLeavesASurrogateAndItsAgentDestroysTheReplica) {
  StartProxy();
  Process* cafe = StartAgent("ss-surr", "10.77.0.3", "cafe");
  int rc;
  std::string out = Use("10.77.0.3:7391", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(ReplicaVms(), 1u);
  Type("stay ");
  ASSERT_TRUE(WaitStatus("replica cafe consumed", 10s)) << StatusText();
  out = Shell(kClient + " leave cafe --state-dir " + kState, &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(cafe->WaitFor("destroying it", 20s)) << cafe->Output();
  EXPECT_TRUE(WaitReplicaVms(0, 20s)) << "the replica's VM outlived the session";
  EXPECT_EQ(StatusText().find("replica cafe"), std::string::npos) << StatusText();
  EXPECT_NE(proxy_->Output().find("replica cafe left at the user's request"), std::string::npos) << proxy_->Output();
  // Home cannot be left, nor a replica that is not there.
  out = Shell(kClient + " leave home --state-dir " + kState, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("primary"), std::string::npos) << out;
  out = Shell(kClient + " leave cafe --state-dir " + kState, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("no replica called \"cafe\""), std::string::npos) << out;
  Type("and go on");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "stay and go on", 60s).ok()) << proxy_->Output();
}

// A lazy replica's RAM working set: the surrogate records the order its
// replica first read its RAM in and sends it home, which keeps it beside the
// checkpoint's RAM table; the next replica of that checkpoint, on another
// surrogate, fetches those chunks first.
TEST_F(E2eTest, AReplicasRamWorkingSetGoesHomeAndTheNextReplicaFetchesItFirst) {
  StartProxy();
  // No input from here on, so no new checkpoint: first let one that an
  // earlier test's typing made due come and go.
  auto home_log = [] {
    std::ifstream in(kWorld + "/home.log");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto count = [](const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) ++n;
    return n;
  };
  size_t checkpoints = count(home_log(), "checkpoint epoch");
  for (auto quiet = Clock::now(), end = Clock::now() + 60s; Clock::now() < end && Clock::now() - quiet < 7s;
       std::this_thread::sleep_for(250ms)) {
    size_t now = count(home_log(), "checkpoint epoch");
    if (now != checkpoints) {
      checkpoints = now;
      quiet = Clock::now();
    }
  }
  const size_t recorded = count(home_log(), "working set for table ");
  Process* cafe =
      StartAgent("ss-surr", "10.77.0.3", "cafe", {"--working-set-seconds", "2", "--ram-page-cache", "false"});
  int rc;
  std::string out = Use("10.77.0.3:7391", &rc);
  ASSERT_EQ(rc, 0) << out;
  ASSERT_TRUE(cafe->WaitFor("is served on demand", 5s)) << cafe->Output();
  ASSERT_TRUE(cafe->WaitFor("sent home the order of its first", 30s)) << cafe->Output();
  for (auto end = Clock::now() + 10s; Clock::now() < end && count(home_log(), "working set for table ") <= recorded;) {
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_GT(count(home_log(), "working set for table "), recorded) << home_log();

  Process* station = StartAgent("ss-surr2", "10.77.0.4", "station");
  out = Use("10.77.0.4:7391", &rc);
  ASSERT_EQ(rc, 0) << out;
  ASSERT_TRUE(station->WaitFor("chunks of its recorded working set are fetched first", 5s)) << station->Output();
  // "the RAM of notepad (epoch E, 128.0 MiB) is served on demand; N chunks ..."
  auto epoch_of = [](const std::string& log) {
    size_t at = log.find("is served on demand; ");
    size_t e = log.rfind("(epoch ", at);
    return at == std::string::npos || e == std::string::npos ? std::string("?")
                                                              : log.substr(e + 7, log.find(',', e) - e - 7);
  };
  ASSERT_EQ(epoch_of(cafe->Output()), epoch_of(station->Output())) << "a checkpoint came between the two replicas";
  const std::string line = station->Output().substr(station->Output().find("is served on demand; ") + 21);
  ASSERT_TRUE(std::isdigit(static_cast<unsigned char>(line[0]))) << "no working set was used:\n" << station->Output();
  EXPECT_GT(std::stol(line), 0) << station->Output();
  EXPECT_EQ(count(home_log(), "checkpoint epoch"), checkpoints);
}

// The home rehearses a restore of its first checkpoint with the RAM on
// demand and records the order the guest read it in, so that a service's
// very first replica already prefetches in that order.
TEST_F(E2eTest, TheHomeRecordsTheRamOrderOfARestoreForTheFirstReplica) {
  std::ifstream in(kWorld + "/home.log");
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string what = "recorded the order a restored guest reads its RAM in (";
  const size_t at = log.find(what);
  ASSERT_NE(at, std::string::npos) << log;
  EXPECT_GT(std::stol(log.substr(at + what.size())), 0) << log.substr(at, 200);
  // No scratch VM is left behind.
  EXPECT_TRUE(ProcessesMatching("-name notepad-rehearsal").empty());
  StartProxy();
  Process* cafe = StartAgent("ss-surr", "10.77.0.3", "cafe");
  int rc;
  std::string out = Use("10.77.0.3:7391", &rc);
  ASSERT_EQ(rc, 0) << out;
  const std::string o = cafe->Output();
  const size_t d = o.find("is served on demand; ");
  ASSERT_NE(d, std::string::npos) << o;
  EXPECT_GT(std::stol(o.substr(d + 21)), 0) << o;
}

// The home dies while a lazy replica's RAM is still arriving: the replica
// either runs on what it has or ends, `use` returns either way, no VM is
// left behind for a replica that ended, and once the home is back nothing
// typed is missing.
TEST_F(E2eTest, ALazyReplicaWhoseHomeDiesMidFetchFailsCleanly) {
  StartProxy();
  Type("before ");
  ASSERT_TRUE(WaitHomeDoc(doc_ + "before ", 60s).ok()) << proxy_->Output();
  Process* cafe = StartAgent("ss-surr", "10.77.0.3", "cafe");
  int use_rc = -1;
  std::string use_out;
  std::thread use([&] { use_out = Use("10.77.0.3:7391", &use_rc); });
  const bool lazy = cafe->WaitFor("is served on demand", 60s);
  int rc;
  Shell("kill -9 $(cat " + kWorld + "/home.pid)", &rc);
  use.join();
  ASSERT_TRUE(lazy) << cafe->Output();
  Type("while home is down ");
  StartWorldHome();
  Type("and after");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "before while home is down and after", 120s).ok()) << proxy_->Output();
  if (use_rc != 0) {
    // It failed, and said why.
    EXPECT_NE(use_out.find("slingshot-client use:"), std::string::npos) << use_out;
  }
  // Either the replica runs and has every input, or it is gone with its VM.
  const uint64_t last = LastSeq();
  bool settled = false;
  for (auto end = Clock::now() + 60s; !settled && Clock::now() < end; std::this_thread::sleep_for(500ms)) {
    const std::string st = StatusText();
    const bool runs = st.find("replica cafe consumed " + std::to_string(last) + " live") != std::string::npos;
    const bool gone = st.find("replica cafe") == std::string::npos && ReplicaVms() == 0;
    settled = runs || gone;
  }
  EXPECT_TRUE(settled) << StatusText() << "\n" << cafe->Output();
}

// Every file under dir whose bytes contain needle.
std::vector<std::string> FilesHolding(const std::string& dir, const std::string& needle) {
  std::vector<std::string> hits;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    auto b = ReadFileBounded(it->path().string(), 1ull << 30);
    if (b.ok() && std::string_view(reinterpret_cast<const char*>(b->data()), b->size()).find(needle) !=
                      std::string_view::npos) {
      hits.push_back(it->path().string());
    }
  }
  return hits;
}

TEST_F(E2eTest, AReplicaEndsWhenItsCapabilityExpiresAndNoKeyReachesTheSurrogatesDisk) {
  Process* cafe = StartAgent("ss-surr", "10.77.0.3", "cafe");
  Pairing p = LoadPairing();
  auto home_ca = CertificateAuthority::Load(kWorld + "/home/tls/ca");
  ASSERT_TRUE(home_ca.ok());
  // A capability good for 30 more seconds, used and kept open.
  auto cap = home_ca->IssueCapability(Capability{"notepad", "alice", 0, ""}, 30);
  ASSERT_TRUE(cap.ok());
  const int64_t not_after = InspectCertificate(cap->cert_pem)->not_after;
  Status ended = InNetns("ss-client", [&]() -> Status {
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, SendInstantiate(p.creds, *cap, p.manifest_key));
    bool attached = false;
    for (;;) {
      auto f = c->Receive(10000);
      if (!f.ok()) return attached ? f.status() : f.status().Annotate("before Attached");
      if (auto* e = std::get_if<wire::Error>(&f->message)) return e->ToStatus("agent");
      if (std::holds_alternative<wire::Attached>(f->message) && !attached) {
        attached = true;
        EXPECT_EQ(ReplicaVms(), 1u);
        // The replica runs: nothing the agent wrote holds a private key.
        for (const auto& secret : {std::string("PRIVATE KEY"), cap->key_pem.substr(28, 40)}) {
          auto hits = FilesHolding(kWorld + "/cafe-cache", secret);
          EXPECT_TRUE(hits.empty()) << "\"" << secret << "\" is on the surrogate's disk in " << hits[0];
        }
      }
    }
  });
  // The agent ended the session at the capability's expiry (not before).
  EXPECT_FALSE(ended.ok());
  EXPECT_GE(static_cast<int64_t>(std::time(nullptr)), not_after) << ended.ToString();
  EXPECT_TRUE(cafe->WaitFor("the capability expired; destroying it", 5s)) << cafe->Output();
  EXPECT_TRUE(WaitReplicaVms(0, 20s)) << "the replica's VM outlived its capability";
}

// A service that keeps its state on its disk (the world's notepad
// autosaves; --state-on-disk) may be booted from the checkpoint's disk
// instead of restored from its memory image: what the appliance's Xen does
// with a QEMU home's checkpoints. Here --prefer-boot asks for it on QEMU.
// The booted replica must hold the checkpoint-time document plus the
// replayed log: once it leads, the client's screen is its screen, and it
// must show every character typed.
TEST_F(E2eTest, AStateOnDiskServiceBootsFromTheCheckpointsDiskAndCatchesUp) {
  StartProxy();
  std::string typed = "Typed before the cafe boots it. ";
  Type(typed);
  ASSERT_TRUE(WaitHomeDoc(doc_ + typed, 60s).ok());
  // A checkpoint that covers all of it, so that the booted replica has it
  // from the disk alone (the log from there on is empty).
  const uint64_t typed_seq = LastSeq();
  auto covered = [&] { return LogRange().first > typed_seq; };
  for (auto end = Clock::now() + 60s; !covered() && Clock::now() < end;) std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(covered()) << "no home checkpoint covered seq " << typed_seq << ": " << StatusText();
  Process* agent = StartAgent("ss-surr", "10.77.0.3", "cafe", {"--prefer-boot"});
  int rc;
  std::string out = Use("10.77.0.3:7391", &rc);
  ASSERT_EQ(rc, 0) << out << agent->Output();
  EXPECT_NE(out.find("ready replica cafe"), std::string::npos) << out;
  EXPECT_TRUE(agent->WaitFor("booting notepad from its checkpoint's disk: --prefer-boot", 1s)) << agent->Output();
  // Typed while it booted and caught up, then until it leads.
  auto until = Clock::now() + 90s;
  while (Leader() != "cafe" && Clock::now() < until) {
    typed += static_cast<char>('a' + typed.size() % 26);
    Type(typed.substr(typed.size() - 1));
  }
  ASSERT_EQ(Leader(), "cafe") << StatusText();
  std::string font_error;
  auto font = notepad::LoadPsf(GuestDir() + "/notepad.psf", &font_error);
  ASSERT_TRUE(font) << font_error;
  Status screen = rfb_->WaitForScreen(*font, doc_ + typed, 30s);
  EXPECT_TRUE(screen.ok()) << screen.ToString() << "\n" << StatusText();
  EXPECT_TRUE(WaitHomeDoc(doc_ + typed, 60s).ok());
}

TEST_F(E2eTest, ALaggingLeaderLosesTheLeadAndCatchesUpAfter) {
  std::string typed = UseCafeUntilItLeads();
  ASSERT_EQ(Leader(), "cafe") << StatusText();
  // The surrogate's VM freezes (an overloaded hotspot): its agent lives on,
  // but the replica stops consuming inputs.
  std::vector<int> vms = ProcessesMatching("-name replica-");
  ASSERT_EQ(vms.size(), 1u);
  pid_t vm = vms[0];
  ASSERT_EQ(kill(vm, SIGSTOP), 0);
  Type(" frozen", 100);
  bool home_led = WaitLeader("home", 10s);
  std::string during = StatusText();
  ASSERT_EQ(kill(vm, SIGCONT), 0);
  EXPECT_TRUE(home_led) << during;
  Type(" thawed");
  typed += " frozen thawed";
  EXPECT_TRUE(WaitHomeDoc(doc_ + typed, 60s).ok()) << proxy_->Output();
  // Lagging is not dying: the frozen replica stayed in the set, and once
  // thawed it consumes every input (it is sent what it missed).
  EXPECT_NE(during.find("replica cafe consumed"), std::string::npos) << during;
  EXPECT_EQ(proxy_->Output().find("replica cafe dropped"), std::string::npos) << proxy_->Output();
  const uint64_t last = LastSeq();
  EXPECT_TRUE(WaitStatus("replica cafe consumed " + std::to_string(last) + " ", 30s)) << last << "\n" << StatusText();
}


// A surrogate that stalls (its agent frozen, as an overloaded hotspot or a
// radio gap would) is dropped as silent, then attached to again once it
// answers: the same replica, sent what it missed, and no new instantiate.
TEST_F(E2eTest, AStalledSurrogateIsAttachedToAgainAndCatchesUp) {
  std::string typed = UseCafeUntilItLeads();
  ASSERT_EQ(Leader(), "cafe") << StatusText();
  const std::vector<int> vms = ProcessesMatching("-name replica-");
  ASSERT_EQ(vms.size(), 1u);
  Process* cafe = agents_[0].get();
  ASSERT_EQ(::kill(cafe->pid(), SIGSTOP), 0);
  Type(" stalled", 50);
  const bool dropped = proxy_->WaitFor("replica cafe dropped", 15s);
  Type(" meanwhile", 50);
  const std::string during = StatusText();
  ::kill(cafe->pid(), SIGCONT);
  ASSERT_TRUE(dropped) << proxy_->Output();
  typed += " stalled meanwhile";
  EXPECT_TRUE(WaitLeader("home", 1s) || during.find(" leader") != std::string::npos) << during;
  EXPECT_TRUE(proxy_->WaitFor("replica cafe attached again", 60s)) << proxy_->Output();
  EXPECT_TRUE(cafe->WaitFor("attached again at seq", 10s)) << cafe->Output();
  Type(" back");
  typed += " back";
  EXPECT_TRUE(WaitHomeDoc(doc_ + typed, 60s).ok()) << proxy_->Output();
  const uint64_t last = LastSeq();
  EXPECT_TRUE(WaitStatus("replica cafe consumed " + std::to_string(last) + " live", 30s)) << last << "\n"
                                                                                           << StatusText();
  // A stranger with a certificate of the same name from another CA is told
  // there is nothing to attach to, and the session goes on.
  auto mallory = CertificateAuthority::Create("mallory", 3600);
  ASSERT_TRUE(mallory.ok());
  TlsCredentials fake = *mallory->Issue("alice", Role::kClient, 300);
  Status stranger = InNetns("ss-client", [&]() -> Status {
    ConnectOptions o;
    o.verify_server_ca = false;
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, Connection::Connect("10.77.0.3", 7391, fake, o));
    SLINGSHOT_RETURN_IF_ERROR(c->Send(1, wire::Attach{"notepad", false}));
    SLINGSHOT_ASSIGN_OR_RETURN(Frame f, c->Receive(10000));
    if (auto* e = std::get_if<wire::Error>(&f.message)) return e->ToStatus("agent");
    return Status::IOError(std::string("the agent answered ") + wire::MessageTypeName(wire::TypeOf(f.message)));
  });
  EXPECT_EQ(stranger.code(), Status::Code::kNotFound) << stranger.ToString();
  Type("!");
  typed += "!";
  EXPECT_TRUE(WaitHomeDoc(doc_ + typed, 60s).ok()) << proxy_->Output();
  EXPECT_TRUE(WaitStatus("replica cafe consumed " + std::to_string(LastSeq()) + " live", 30s)) << StatusText();
  // The same VM, never destroyed or made again.
  EXPECT_EQ(ProcessesMatching("-name replica-"), vms);
  EXPECT_EQ(cafe->Output().find("destroying it"), std::string::npos) << cafe->Output();
  EXPECT_EQ(cafe->Output().find("replica-2"), std::string::npos) << cafe->Output();
}

// A client that never comes back (its proxy killed): the agent keeps the
// replica for --reattach-seconds, then destroys it.
TEST_F(E2eTest, AReplicaWhoseClientDoesNotComeBackIsDestroyedAfterTheWait) {
  StartProxy();
  Process* cafe = StartAgent("ss-surr", "10.77.0.3", "cafe", {"--reattach-seconds", "3"});
  int rc;
  std::string out = Use("10.77.0.3:7391", &rc);
  ASSERT_EQ(rc, 0) << out;
  ASSERT_EQ(ReplicaVms(), 1u);
  proxy_->Kill(SIGKILL);
  rfb_.reset();
  EXPECT_TRUE(cafe->WaitFor("kept 3 s for client", 20s)) << cafe->Output();
  EXPECT_TRUE(cafe->WaitFor("did not attach again within 3 s; destroying it", 30s)) << cafe->Output();
  EXPECT_TRUE(WaitReplicaVms(0, 20s)) << "the replica's VM outlived the wait";
  StartProxy();  // the log is intact: typing goes on at home
  Type("after");
  EXPECT_TRUE(WaitHomeDoc(doc_ + "after", 60s).ok()) << proxy_->Output();
}

// A device of another user (bob) gets nothing of alice's service: no
// session, no capability, no checkpoint; its proxy says why and stops.
TEST_F(E2eTest, AnotherUsersDeviceIsRefusedTheServiceAndItsCheckpoints) {
  const std::string bob = kWorld + "/bob";
  Process proxy({kClient, "proxy", "notepad", "--state-dir", bob, "--home", kHomeViaWan, "--listen", "127.0.0.1:5903"},
                kWorld + "/proxy-bob.log", "ss-client");
  EXPECT_TRUE(proxy.WaitFor("takes no more input", 60s)) << proxy.Output();
  EXPECT_NE(proxy.Output().find("belongs to another user"), std::string::npos) << proxy.Output();
  EXPECT_TRUE(proxy.WaitFor("slingshot-client proxy: PermissionDenied", 10s)) << proxy.Output();
  int rc;
  std::string out = Shell("ip netns exec ss-client " + kClient + " portable sync " + kWorld + "/bob-stick --home " +
                              kHomeViaWan + " --credentials " + bob + "/pairing --ref manifest/notepad",
                          &rc);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("belongs to another user"), std::string::npos) << out;
  // Nothing bob's proxy got reached alice's document.
  auto d = HomeDoc();
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, doc_);
}

// Two devices of one user: the second is refused while the first holds the
// service (no ping-pong), takes it over when asked (the first sends what it
// logged and stops), and every key typed on either is in the document once.
TEST_F(E2eTest, TwoDevicesOfOneUserHandOverAndEveryKeyIsAppliedOnce) {
  signal(SIGPIPE, SIG_IGN);  // the laptop's proxy cuts its viewer off mid-typing
  StartProxy();
  Type("laptop one ");
  ASSERT_TRUE(WaitHomeDoc(doc_ + "laptop one ", 60s).ok()) << proxy_->Output();
  const std::string tablet = kWorld + "/tablet";
  auto tablet_proxy = [&](bool take_over) {
    std::vector<std::string> argv{kClient, "proxy", "notepad", "--state-dir", tablet, "--home", kHomeViaWan,
                                  "--listen", "127.0.0.1:5902"};
    if (take_over) argv.push_back("--take-over");
    return std::make_unique<Process>(argv, kWorld + "/proxy-tablet-" + std::to_string(++proxies_) + ".log",
                                     "ss-client");
  };
  // Refused while the laptop holds it; the laptop is not disturbed.
  auto refused = tablet_proxy(false);
  EXPECT_TRUE(refused->WaitFor("takes no more input", 60s)) << refused->Output();
  EXPECT_NE(refused->Output().find("is held by device"), std::string::npos) << refused->Output();
  // ...and it exits, saying why.
  EXPECT_TRUE(refused->WaitFor("slingshot-client proxy: PermissionDenied", 10s)) << refused->Output();
  refused->Kill(SIGTERM);
  Type("still laptop ");
  ASSERT_TRUE(WaitHomeDoc(doc_ + "laptop one still laptop ", 60s).ok()) << proxy_->Output();
  EXPECT_EQ(StatusText().find("STOPPED"), std::string::npos) << StatusText();

  // The tablet takes over while the laptop is typing: whatever the laptop
  // logged reaches home before the hand-over checkpoint.
  std::atomic<bool> typing{true};
  std::string laptop_typed;
  std::thread laptop([&] {
    while (typing) {
      char c = static_cast<char>('a' + laptop_typed.size() % 26);
      if (!rfb_->Type(std::string(1, c)).ok()) break;  // the proxy cut the viewer off
      laptop_typed += c;
      std::this_thread::sleep_for(20ms);
    }
  });
  std::this_thread::sleep_for(1500ms);
  auto taker = tablet_proxy(true);
  ASSERT_TRUE(taker->WaitFor("proxy ready", 120s)) << taker->Output();
  ASSERT_TRUE(WaitStatus("STOPPED", 30s)) << StatusText();
  typing = false;
  laptop.join();
  EXPECT_NE(StatusText().find("took notepad over"), std::string::npos) << StatusText();
  // Every input in the laptop's log was applied at home before the
  // tablet's log began: the tablet goes on at exactly that seq.
  const uint64_t laptop_last = LastSeq();
  EXPECT_NE(taker->Output().find("took notepad over at seq " + std::to_string(laptop_last)), std::string::npos)
      << laptop_last << "\n" << taker->Output();
  auto after = HomeDoc();
  ASSERT_TRUE(after.ok());
  const std::string before_tablet = *after;
  ASSERT_EQ(before_tablet.rfind(doc_ + "laptop one still laptop ", 0), 0u) << before_tablet;
  // What reached home of the laptop's stream is a prefix of what it typed,
  // each key once (a key whose bytes the proxy never logged is not there).
  std::string got = before_tablet.substr((doc_ + "laptop one still laptop ").size());
  EXPECT_EQ(laptop_typed.rfind(got, 0), 0u) << "typed " << laptop_typed << " got " << got;

  auto s = InNetns("ss-client", [] { return RfbSession::Connect(Endpoint{"127.0.0.1", 5902}); });
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE((*s)->Type("tablet ").ok());
  EXPECT_TRUE(WaitHomeDoc(before_tablet + "tablet ", 60s).ok()) << taker->Output();
  // The laptop, told nothing new, does not take it back by itself.
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(taker->Output().find("takes no more input"), std::string::npos) << taker->Output();
  s->reset();

  // And the laptop takes it back (the other tests type on it).
  rfb_.reset();
  proxy_->Kill(SIGTERM);
  StartProxy({"--take-over"});
  EXPECT_TRUE(taker->WaitFor("takes no more input", 30s)) << taker->Output();
  Type("laptop again");
  EXPECT_TRUE(WaitHomeDoc(before_tablet + "tablet laptop again", 60s).ok()) << proxy_->Output();
  taker->Kill(SIGTERM);
}

// A surrogate that is not the appliance keeps its cache and the replica's
// overlay on its disk: encrypted under a key only the agent's memory held.
// After kill -9 mid-session, a marker typed into the document (which the
// notepad autosaves to its disk) is in no file the agent wrote.
TEST_F(E2eTest, AfterKill9NothingTypedIsReadableOnTheSurrogatesDisk) {
  std::string typed = UseCafeUntilItLeads();
  ASSERT_EQ(Leader(), "cafe") << StatusText();
  const std::string marker = "zqxmarkerzqx";
  Type(marker);
  ASSERT_TRUE(WaitHomeDoc(doc_ + typed + marker, 60s).ok()) << proxy_->Output();
  std::this_thread::sleep_for(3s);  // the notepad's autosave reaches the overlay
  agents_[0]->Kill(SIGKILL);
  auto hits = FilesHolding(kWorld + "/cafe-cache", marker);
  EXPECT_TRUE(hits.empty()) << "the marker is on the surrogate's disk in " << hits[0];
  // (And the files are there to look in: the cache and the replica's overlay.)
  EXPECT_FALSE(FilesHolding(kWorld + "/cafe-cache", "").empty());
}

// The fault campaign (label fault, `make fault`): random kill -9 of the
// proxy, the home daemon or the surrogate's agent at a random moment while
// keys are typed, and the home's disk filling up. After each, every key the
// proxy acknowledged (logged) is in the home's document exactly once.
// SLINGSHOT_FAULT_TRIALS sets the number of trials (default 30).
class FaultCampaign : public E2eTest {
 protected:
  const std::string small_ = kWorld + "/home/small";

  void KillHome() {
    // The home daemon is the world's (world.sh started it; its pid file
    // says which): killed, and gone with its store lock, before the next.
    std::string pid = Shell("cat " + kWorld + "/home.pid");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    ASSERT_FALSE(pid.empty());
    ::kill(std::stoi(pid), SIGKILL);
    for (int i = 0; i < 200 && fs::exists("/proc/" + pid); ++i) std::this_thread::sleep_for(50ms);
  }
  void RestartHome() {
    KillHome();
    StartWorldHome();
  }

  // Moves the world home's store onto a file system of its own (a 1 GiB
  // ext4 image, loop-mounted at home/small; home/store becomes a link into
  // it), so that a trial can fill it. It stays until `world.sh down`.
  void StoreOnSmallFileSystem() {
    if (fs::is_symlink(kWorld + "/home/store")) return;
    KillHome();
    int rc;
    std::string out = Shell("set -e; cd " + kWorld + "/home; truncate -s 1G small.img; mkfs.ext4 -q -F -m 0 small.img; "
                            "mkdir -p small; mount -o loop small.img small; cp -a store small/store; rm -rf store; "
                            "ln -s small/store store",
                            &rc);
    ASSERT_EQ(rc, 0) << "putting the home's store on a loop-mounted ext4: " << out;
    StartWorldHome();
  }
  // Takes every free block of the store's file system, and keeps taking
  // what the home frees (a log file it removes, a pack compaction drops),
  // as another program filling the disk would, until FreeStoreDisk.
  void FillStoreDisk() {
    filling_ = true;
    full_ = false;
    filler_ = std::thread([this] {
      for (int n = 0; filling_; ++n) {
        struct statvfs v;
        if (::statvfs(small_.c_str(), &v) == 0) {
          UniqueFd fd(::open((small_ + "/filler-" + std::to_string(n)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
          // Greedy: all that is free, and what the file system's own
          // metadata leaves in halves, down to a block. Full: not one more
          // block (ext4 keeps some of what statvfs calls free for itself).
          off_t end = 0;
          for (off_t size = std::max<off_t>(4096, static_cast<off_t>(uint64_t(v.f_bfree) * v.f_frsize));
               fd.valid() && size >= 4096;) {
            if (::posix_fallocate(fd.get(), end, size) == 0) end += size;
            else size /= 2;
          }
          if (end == 0) full_ = true;
        }
        std::this_thread::sleep_for(100ms);
      }
    });
    for (int i = 0; i < 100 && !full_; ++i) std::this_thread::sleep_for(100ms);
    if (!full_) ADD_FAILURE() << "the store's file system did not fill";
  }
  void FreeStoreDisk() {
    filling_ = false;
    if (filler_.joinable()) filler_.join();
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(small_, ec)) {
      if (e.path().filename().string().rfind("filler-", 0) == 0) fs::remove(e.path(), ec);
    }
  }
  void TearDown() override {
    FreeStoreDisk();
    E2eTest::TearDown();
  }
  std::atomic<bool> filling_{false}, full_{false};
  std::thread filler_;

  // How often the home's log says what.
  static int HomeLogCount(const std::string& what) {
    std::ifstream in(kWorld + "/home.log");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    int n = 0;
    for (size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) ++n;
    return n;
  }
  static bool WaitHomeLog(const std::string& what, int more_than, std::chrono::seconds timeout) {
    for (auto end = Clock::now() + timeout; Clock::now() < end; std::this_thread::sleep_for(200ms)) {
      if (HomeLogCount(what) > more_than) return true;
    }
    return false;
  }
};

TEST_F(FaultCampaign, RandomKillsAndAFullDiskWhileTypingLoseAndDuplicateNothing) {
  signal(SIGPIPE, SIG_IGN);  // a viewer typing into a proxy that was just killed
  int trials = 30;
  if (const char* t = std::getenv("SLINGSHOT_FAULT_TRIALS")) trials = std::max(1, std::atoi(t));
  std::mt19937 rng(static_cast<unsigned>(std::time(nullptr)));
  StoreOnSmallFileSystem();
  if (HasFatalFailure()) return;
  StartProxy();
  std::string expected = doc_;
  uint64_t lost = 0, duplicated = 0;
  double max_recovery_s = 0;
  int done = 0, disk_trials = 0;
  // Every kind in turn from a random start, each fault at a random moment.
  const char* kinds[] = {"proxy", "home", "surrogate", "disk"};
  const unsigned first = rng() % 4;
  for (int trial = 0; trial < trials && !HasFatalFailure(); ++trial) {
    const std::string kind = kinds[(first + trial) % 4];
    Process* agent = nullptr;
    if (kind == "surrogate") {
      agents_.clear();
      agent = StartAgent("ss-surr", "10.77.0.3", "cafe");
      int rc;
      std::string out = Use("10.77.0.3:7391", &rc);
      ASSERT_EQ(rc, 0) << out;
    }
    // Distinct keys, so that a lost or doubled one shows.
    std::string keys = "<" + std::to_string(trial) + ":" + kind.substr(0, 1);
    for (int i = 0; i < 12; ++i) keys += static_cast<char>('a' + (rng() % 26));
    keys += "> ";
    const uint64_t seq_before = LastSeq();
    const int failed_before = HomeLogCount(": checkpoint failed (");
    const int kill_after_ms = static_cast<int>(rng() % 400);
    Clock::time_point killed_at;
    std::thread killer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
      killed_at = Clock::now();
      if (kind == "proxy") proxy_->Kill(SIGKILL);
      else if (kind == "home") RestartHome();
      else if (kind == "surrogate") agent->Kill(SIGKILL);
      else FillStoreDisk();
    });
    std::string sent;
    for (char c : keys) {
      if (!rfb_ || !rfb_->Type(std::string(1, c)).ok()) break;
      sent += c;
      std::this_thread::sleep_for(15ms);
    }
    killer.join();
    if (kind == "proxy") {
      // What the killed proxy acknowledged is what its log holds: a key is
      // a press and a release, and a key whose release was not logged has
      // no effect yet (the notepad acts on the press: count presses).
      rfb_.reset();
      StartProxy();
      ASSERT_TRUE(proxy_) << "the proxy did not come back";
      const uint64_t logged = LastSeq() - seq_before;
      expected += keys.substr(0, std::min<size_t>(keys.size(), (logged + 1) / 2));
      sent.clear();
    } else {
      expected += sent;  // the proxy lived: everything it was sent is logged
      if (sent.size() < keys.size()) {
        // The viewer session broke (it should not): type the rest again.
        ADD_FAILURE() << "the viewer lost its session with the proxy in a " << kind << " trial";
      }
    }
    std::string what = kind + " killed after " + std::to_string(kill_after_ms) + " ms";
    int checkpoints_before = 0;
    if (kind == "disk") {
      // The home's disk is full: a checkpoint fails, the primary keeps
      // running; in turn, the home is also restarted on the full disk, or a
      // surrogate is made from the last checkpoint meanwhile.
      const int variant = disk_trials++ % 3;
      what = "disk filled after " + std::to_string(kill_after_ms) + " ms";
      ASSERT_TRUE(WaitHomeLog(": checkpoint failed (", failed_before, 90s))
          << "no checkpoint failed on the full disk\n" << Shell("tail -n 30 " + kWorld + "/home.log");
      if (variant == 1) {
        RestartHome();
        what += ", home restarted on it";
      } else if (variant == 2) {
        agents_.clear();
        StartAgent("ss-surr", "10.77.0.3", "cafe");
        int rc;
        std::string out = Use("10.77.0.3:7391", &rc);
        ASSERT_EQ(rc, 0) << "no replica from a home whose disk is full: " << out;
        what += ", a surrogate made meanwhile";
      }
      const std::string full = "[full" + std::to_string(trial) + "] ";
      Type(full);
      expected += full;
      Status st = WaitHomeDoc(expected, 180s);
      ASSERT_TRUE(st.ok()) << "the home stopped serving on a full disk (" << what << "): " << st.ToString() << "\n"
                           << Shell("tail -n 30 " + kWorld + "/home.log");
      checkpoints_before = HomeLogCount(": checkpoint epoch ");
      FreeStoreDisk();
      killed_at = Clock::now();  // recovery: from the space coming back
    }
    // A key after the fault marks recovery.
    const std::string mark = "#" + std::to_string(trial) + " ";
    Type(mark);
    expected += mark;
    Status st = WaitHomeDoc(expected, 180s);
    if (st.ok() && kind == "disk" && !WaitHomeLog(": checkpoint epoch ", checkpoints_before, 120s)) {
      ADD_FAILURE() << "checkpoints did not resume when space came back\n" << Shell("tail -n 30 " + kWorld + "/home.log");
      break;
    }
    const double recovery = std::chrono::duration<double>(Clock::now() - killed_at).count();
    max_recovery_s = std::max(max_recovery_s, recovery);
    if (!st.ok()) {
      auto d = HomeDoc();
      std::string got = d.ok() ? *d : "";
      if (got.size() > expected.size()) duplicated += got.size() - expected.size();
      else lost += expected.size() - got.size() + (got == expected.substr(0, got.size()) ? 0 : 1);
      ADD_FAILURE() << "trial " << trial << " (" << what << "): " << st.ToString() << "\n" << proxy_->Output();
      break;
    }
    ++done;
    std::printf("trial %d: %s, recovered in %.1f s\n", trial, what.c_str(), recovery);
    std::fflush(stdout);
  }
  FreeStoreDisk();
  std::printf("RESULT trials=%d disk_full=%d lost=%llu duplicated=%llu max_recovery_s=%.1f\n", done, disk_trials,
              static_cast<unsigned long long>(lost), static_cast<unsigned long long>(duplicated), max_recovery_s);
  EXPECT_EQ(done, trials);
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(duplicated, 0u);
}

// The soak (label soak, `make soak`, bench/soak_bench): typing and pointer
// motion for SLINGSHOT_SOAK_SECONDS (default an hour), with a surrogate
// replica killed every SLINGSHOT_SOAK_KILL_SECONDS (default 180) and made
// again. Prints the daemons' RSS at start and end, the store's size,
// checkpoints, and lost inputs.
uint64_t RssMiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) >> 10;
  }
  return 0;
}
uint64_t DirBytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) n += it->file_size(ec);
  }
  return n;
}
pid_t HomePid() {
  std::ifstream in(kWorld + "/home.pid");
  pid_t p = 0;
  in >> p;
  return p;
}

class Soak : public FaultCampaign {};

TEST_F(Soak, TypingAndPointerMotionWithSurrogatesKilledLoseNothing) {
  signal(SIGPIPE, SIG_IGN);
  auto env_int = [](const char* name, int def) {
    const char* v = std::getenv(name);
    return v ? std::max(1, std::atoi(v)) : def;
  };
  const int seconds = env_int("SLINGSHOT_SOAK_SECONDS", 3600);
  const int kill_every = env_int("SLINGSHOT_SOAK_KILL_SECONDS", 180);
  StartProxy();
  const uint64_t home_rss0 = RssMiB(HomePid()), proxy_rss0 = RssMiB(proxy_->pid());
  const uint64_t store0 = DirBytes(kWorld + "/home/store");
  std::string expected = doc_;
  uint64_t keys = 0, pointers = 0, kills = 0, agent_rss_first = 0, agent_rss_max = 0;
  std::mt19937 rng(7);
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end && !HasFatalFailure()) {
    agents_.clear();
    Process* agent = StartAgent("ss-surr", "10.77.0.3", "cafe");
    int rc;
    std::string out = Use("10.77.0.3:7391", &rc);
    ASSERT_EQ(rc, 0) << out;
    if (!agent_rss_first) agent_rss_first = RssMiB(agent->pid());
    const auto until = std::min(end, Clock::now() + std::chrono::seconds(kill_every));
    while (Clock::now() < until) {
      // A word, with the mouse moving between keys.
      for (int i = 0; i < 8; ++i) {
        char c = static_cast<char>('a' + rng() % 26);
        ASSERT_TRUE(rfb_->Type(std::string(1, c)).ok());
        expected += c;
        ++keys;
        for (int m = 0; m < 10; ++m) {
          uint8_t ev[6] = {5, 0, 0, 0, 0, 0};
          uint16_t x = static_cast<uint16_t>(rng() % 640), y = static_cast<uint16_t>(rng() % 400);
          ev[2] = static_cast<uint8_t>(x >> 8);
          ev[3] = static_cast<uint8_t>(x);
          ev[4] = static_cast<uint8_t>(y >> 8);
          ev[5] = static_cast<uint8_t>(y);
          ASSERT_TRUE(rfb_->SendRaw(ev, sizeof(ev)).ok());
          ++pointers;
        }
        std::this_thread::sleep_for(60ms);
      }
      ASSERT_TRUE(rfb_->Type(" ").ok());
      expected += ' ';
      ++keys;
      (void)rfb_->Pump(10);
    }
    agent_rss_max = std::max(agent_rss_max, RssMiB(agent->pid()));
    agent->Kill(SIGKILL);
    ++kills;
  }
  Status st = WaitHomeDoc(expected, 300s);
  auto d = HomeDoc();
  const std::string got = d.ok() ? *d : "";
  const uint64_t lost = st.ok() ? 0 : (expected.size() > got.size() ? expected.size() - got.size() : 1);
  std::string home_log = Shell("cat " + kWorld + "/home.log");
  uint64_t checkpoints = 0;
  for (size_t at = 0; (at = home_log.find(": checkpoint epoch ", at)) != std::string::npos; ++at) ++checkpoints;
  std::printf("RESULT soak_s=%d keys=%llu pointer_events=%llu surrogate_kills=%llu lost=%llu checkpoints=%llu "
              "home_rss_mib=%llu->%llu proxy_rss_mib=%llu->%llu agent_rss_mib=%llu..%llu store_mib=%.1f->%.1f\n",
              seconds, (unsigned long long)keys, (unsigned long long)pointers, (unsigned long long)kills,
              (unsigned long long)lost, (unsigned long long)checkpoints, (unsigned long long)home_rss0,
              (unsigned long long)RssMiB(HomePid()), (unsigned long long)proxy_rss0,
              (unsigned long long)RssMiB(proxy_->pid()), (unsigned long long)agent_rss_first,
              (unsigned long long)agent_rss_max, store0 / 1048576.0, DirBytes(kWorld + "/home/store") / 1048576.0);
  std::fflush(stdout);
  EXPECT_TRUE(st.ok()) << st.ToString();
}

}  // namespace
}  // namespace slingshot::testing
