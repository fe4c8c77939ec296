#include "fakes.h"

#include <chrono>
#include <thread>

#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"

namespace slingshot::fake {
namespace {
using Clock = std::chrono::steady_clock;
constexpr Magic kGuestMagic = {'F', 'K', 'G', 'S'};
constexpr Magic kStreamMagic = {'F', 'K', 'V', 'M'};
constexpr uint16_t kWidth = 16, kHeight = 8;

struct Directory {
  Mutex mu;
  std::map<uint16_t, std::weak_ptr<FakeGuest>> guests GUARDED_BY(mu);
  uint16_t next_port GUARDED_BY(mu) = 20000;
};
Directory& Dir() {
  static Directory* d = new Directory;
  return *d;
}

Bytes Pseudorandom(size_t n, uint64_t seed) {
  Bytes b(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = static_cast<uint8_t>(x);
  }
  return b;
}

class FakeAdapter final : public ServiceAdapter {
 public:
  FakeAdapter(std::shared_ptr<FakeGuest> guest, uint64_t consumed, ServiceCallbacks cb)
      : guest_(std::move(guest)), cb_(std::move(cb)), applied_(consumed), consumed_(consumed) {
    loss_ = std::make_shared<FakeGuest::LossFn>([this](const Status& why) {
      {
        MutexLock l(&mu_);
        if (closed_) return;
        closed_ = true;
      }
      if (cb_.on_lost) cb_.on_lost(why);
    });
    guest_->Watch(loss_);
  }

  Status Apply(const wire::Input& in) override {
    uint64_t report = 0;
    {
      MutexLock l(&mu_);
      if (closed_) return Status::Unavailable("the fake service connection is closed");
      if (in.seq <= applied_) return Status::OK();
      if (in.seq != applied_ + 1) {
        return Status::InvalidArgument("input " + std::to_string(in.seq) + " after " + std::to_string(applied_));
      }
      SLINGSHOT_RETURN_IF_ERROR(guest_->Apply(in.seq, in.payload));
      applied_ = in.seq;
      if (!guest_->held()) report = consumed_ = applied_;
    }
    if (report) Report(report);
    return Status::OK();
  }
  uint64_t applied() const override {
    MutexLock l(&mu_);
    return applied_;
  }
  uint64_t consumed() const override {
    MutexLock l(&mu_);
    return consumed_;
  }
  Status Barrier(int timeout_ms) override {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      uint64_t report = 0;
      {
        MutexLock l(&mu_);
        if (consumed_ == applied_) return Status::OK();
        if (!guest_->held()) report = consumed_ = applied_;
      }
      if (report) {
        Report(report);
        return Status::OK();
      }
      if (Clock::now() > deadline) return Status::Unavailable("the fake service holds its inputs");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  wire::Screen FullScreen() const override {
    wire::Screen s;
    s.full = true;
    s.rects.push_back(Rect());
    return s;
  }
  uint16_t width() const override { return kWidth; }
  uint16_t height() const override { return kHeight; }
  void Close() override {
    MutexLock l(&mu_);
    closed_ = true;
  }
 private:
  wire::ScreenRect Rect() const {
    wire::ScreenRect r{0, 0, kWidth, kHeight, 0, {}};
    ChunkId d = guest_->Digest();
    r.data.resize(size_t(kWidth) * kHeight * 4);
    for (size_t i = 0; i < r.data.size(); ++i) r.data[i] = d.bytes[i % ChunkId::kSize];
    return r;
  }
  void Report(uint64_t seq) {
    if (cb_.on_consumed) cb_.on_consumed(seq);
    if (cb_.on_screen) {
      wire::Screen s;
      s.rects.push_back(Rect());
      cb_.on_screen(std::move(s));
    }
  }

  std::shared_ptr<FakeGuest> guest_;
  ServiceCallbacks cb_;
  std::shared_ptr<FakeGuest::LossFn> loss_;  // the guest holds it weakly
  mutable Mutex mu_;
  uint64_t applied_ GUARDED_BY(mu_);
  uint64_t consumed_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;
};

}  // namespace

void RegisterFakeService() {
  static const bool registered = [] {
    ServiceType t;
    t.name = kServiceType;
    t.open = [](const Endpoint& ep, uint64_t consumed, ServiceCallbacks cb,
                int) -> Result<std::unique_ptr<ServiceAdapter>> {
      auto g = GuestAt(ep);
      if (!g) return Status::Unavailable("no fake guest serves " + ep.ToString());
      if (g->refusing()) return Status::Unavailable("the fake guest at " + ep.ToString() + " refuses connections");
      // (A booted guest would hold its state on its disk, which the fake
      // does not model: only a restored one is checked.)
      if (g->restored() && g->last_seq() < consumed) {
        return Status::InvalidArgument("the fake guest holds inputs up to " + std::to_string(g->last_seq()) +
                                       ", not " + std::to_string(consumed));
      }
      return std::unique_ptr<ServiceAdapter>(new FakeAdapter(std::move(g), consumed, std::move(cb)));
    };
    t.check_input = [](uint16_t type, ByteView payload) {
      if (type != 1) return Status::InvalidArgument("fake inputs have type 1, not " + std::to_string(type));
      if (payload.size() > 1024) return Status::InvalidArgument("a fake input is at most 1024 bytes");
      return Status::OK();
    };
    return RegisterServiceType(std::move(t)).ok();
  }();
  (void)registered;
}

FakeGuest::FakeGuest(size_t memory_bytes, uint64_t seed) : memory_(Pseudorandom(memory_bytes, seed)) {}

std::vector<std::pair<uint64_t, Bytes>> FakeGuest::inputs() const {
  MutexLock l(&mu_);
  return inputs_;
}
uint64_t FakeGuest::last_seq() const {
  MutexLock l(&mu_);
  return inputs_.empty() ? 0 : inputs_.back().first;
}
ChunkId FakeGuest::Digest() const {
  Bytes b = Save();
  return ChunkId::Of(b);
}
void FakeGuest::Refuse(bool refuse) {
  MutexLock l(&mu_);
  refuse_ = refuse;
}
bool FakeGuest::restored() const {
  MutexLock l(&mu_);
  return restored_;
}
bool FakeGuest::refusing() const {
  MutexLock l(&mu_);
  return refuse_;
}
void FakeGuest::Hold(bool hold) {
  MutexLock l(&mu_);
  hold_ = hold;
}
void FakeGuest::Watch(std::weak_ptr<LossFn> on_lost) {
  MutexLock l(&mu_);
  watchers_.push_back(std::move(on_lost));
}
void FakeGuest::DropConnections(const Status& why) {
  std::vector<std::shared_ptr<LossFn>> fns;
  {
    MutexLock l(&mu_);
    for (auto& w : watchers_) {
      if (auto f = w.lock()) fns.push_back(std::move(f));
    }
    watchers_.clear();
  }
  for (auto& f : fns) (*f)(why);
}
bool FakeGuest::held() const {
  MutexLock l(&mu_);
  return hold_;
}
Status FakeGuest::Apply(uint64_t seq, ByteView payload) {
  MutexLock l(&mu_);
  if (!inputs_.empty() && seq <= inputs_.back().first) {
    return Status::InvalidArgument("the guest already applied input " + std::to_string(seq));
  }
  inputs_.emplace_back(seq, Bytes(payload.begin(), payload.end()));
  return Status::OK();
}
void FakeGuest::SetInputs(std::vector<std::pair<uint64_t, Bytes>> inputs) {
  MutexLock l(&mu_);
  inputs_ = std::move(inputs);
}

Bytes FakeGuest::Memory() const {
  MutexLock l(&mu_);
  return memory_;
}

void FakeGuest::SetMemory(Bytes memory) {
  MutexLock l(&mu_);
  memory_ = std::move(memory);
}

Bytes FakeGuest::Save(bool with_memory) const {
  MutexLock l(&mu_);
  Bytes body;
  Encoder e(&body);
  e.U32(static_cast<uint32_t>(inputs_.size()));
  for (const auto& [seq, p] : inputs_) {
    e.U64(seq);
    e.U32(static_cast<uint32_t>(p.size()));
    e.Raw(p.data(), p.size());
  }
  const size_t m = with_memory ? memory_.size() : 0;
  e.U32(static_cast<uint32_t>(m));
  e.Raw(memory_.data(), m);
  return SealFrame(kGuestMagic, 1, body);
}

Result<std::shared_ptr<FakeGuest>> FakeGuest::Load(ByteView saved) {
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(saved, kGuestMagic, 1, 64u << 20, "fake guest state"));
  Decoder d(f.body, "fake guest state");
  uint32_t n = d.U32();
  if (d.ok() && n > (1u << 20)) d.Fail("too many inputs");
  std::vector<std::pair<uint64_t, Bytes>> inputs;
  for (uint32_t i = 0; d.ok() && i < n; ++i) {
    uint64_t seq = d.U64();
    uint32_t len = d.U32();
    if (d.ok() && len > 1024) d.Fail("an input is too long");
    ByteView p = d.Raw(len);
    inputs.emplace_back(seq, Bytes(p.begin(), p.end()));
  }
  uint32_t m = d.U32();
  ByteView mem = d.Raw(m);
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  auto g = std::make_shared<FakeGuest>(0, 0);
  g->SetInputs(std::move(inputs));
  {
    MutexLock l(&g->mu_);
    g->restored_ = true;
    g->memory_.assign(mem.begin(), mem.end());
  }
  return g;
}

std::shared_ptr<FakeGuest> GuestAt(const Endpoint& ep) {
  if (ep.host != "fake") return nullptr;
  Directory& d = Dir();
  MutexLock l(&d.mu);
  auto it = d.guests.find(ep.port);
  return it == d.guests.end() ? nullptr : it->second.lock();
}

FakeHypervisor::FakeHypervisor(FakeHypervisorOptions options) : options_(std::move(options)) {}

FakeHypervisor::~FakeHypervisor() {
  std::vector<std::string> names;
  {
    MutexLock l(&mu_);
    for (const auto& [n, vm] : vms_) names.push_back(n);
  }
  for (const auto& n : names) (void)Destroy(n);
}

NbdDisk FakeHypervisor::DiskAddress(const std::string& run_dir) const {
  if (options_.disks_over_tcp) return NbdDisk{"", "127.0.0.1", 0, "disk", false};
  return NbdDisk{run_dir + "/disk.sock", "", 0, "disk", false};
}

Status FakeHypervisor::Start(const VmSpec& spec, std::shared_ptr<FakeGuest> guest) {
  if (spec.name.empty()) return Status::InvalidArgument("a VM needs a name");
  if (vms_.count(spec.name)) return Status::AlreadyExists("VM " + spec.name + " exists");
  if (spec.disk && options_.disks_over_tcp && spec.disk->port == 0) {
    return Status::InvalidArgument("this hypervisor's disks are served over TCP; disk.port is 0");
  }
  if (spec.disk && !options_.disks_over_tcp && spec.disk->unix_socket.empty()) {
    return Status::InvalidArgument("this hypervisor's disks are served on a unix socket; disk.unix_socket is empty");
  }
  if (refuse_next_) {
    guest->Refuse(true);
    refuse_next_ = false;
  }
  Vm vm{spec, std::move(guest), {}};
  Directory& d = Dir();
  MutexLock l(&d.mu);
  for (uint16_t p : spec.service_ports) {
    Endpoint ep{"fake", d.next_port++};
    d.guests[ep.port] = vm.guest;
    vm.ports[p] = ep;
  }
  vms_.emplace(spec.name, std::move(vm));
  return Status::OK();
}

Status FakeHypervisor::Boot(const VmSpec& spec) {
  MutexLock l(&mu_);
  if (fail_boot_) {
    Status st = *fail_boot_;
    fail_boot_.reset();
    return st;
  }
  ++boots_;
  return Start(spec, std::make_shared<FakeGuest>(options_.guest_memory_bytes, seed_++));
}

Result<CheckpointStats> FakeHypervisor::Checkpoint(const std::string& name, const ByteSink& sink, bool keep_running,
                                                   const CheckpointHooks& hooks) {
  std::shared_ptr<FakeGuest> g;
  {
    MutexLock l(&mu_);
    if (fail_checkpoint_) {
      Status st = *fail_checkpoint_;
      fail_checkpoint_.reset();
      return st;
    }
    auto it = vms_.find(name);
    if (it == vms_.end()) return Status::NotFound("no VM " + name);
    g = it->second.guest;
  }
  const bool apart = options_.ram_apart && hooks.ram;
  Bytes body;
  Encoder e(&body);
  e.Str(options_.stream_format);
  e.U8(apart ? 1 : 0);
  Bytes state = g->Save(/*with_memory=*/!apart);
  e.Raw(state.data(), state.size());
  Bytes stream = SealFrame(kStreamMagic, 1, body);
  Bytes ram = apart ? g->Memory() : Bytes();
  CheckpointStats st;
  st.live = keep_running && options_.live_checkpoints;
  st.ram_apart = apart;
  bool ran = false;
  auto run = [&] {
    if (!keep_running || ran) return;
    ran = true;
    if (hooks.running) hooks.running();
  };
  Status s = hooks.at_pause ? hooks.at_pause() : Status::OK();
  if (s.ok() && st.live) run();
  for (size_t at = 0, piece = 0; s.ok() && at < stream.size(); at += options_.stream_piece, ++piece) {
    size_t n = std::min(options_.stream_piece, stream.size() - at);
    if (options_.on_piece) s = options_.on_piece(piece);
    if (s.ok()) s = sink(ByteView(stream.data() + at, n));
  }
  run();
  if (s.ok() && apart) {
    std::vector<GuestRam::Extent> data;
    if (!ram.empty()) data.push_back({0, ram.size()});
    s = hooks.ram(GuestRam{ram, data});
  }
  SLINGSHOT_RETURN_IF_ERROR(s);
  st.stream_bytes = stream.size();
  return st;
}

Result<RestoreStats> FakeHypervisor::Restore(const VmSpec& spec, const StreamProducer& stream,
                                             const RestoreRam* ram) {
  {
    MutexLock l(&mu_);
    if (fail_restore_) {
      Status st = *fail_restore_;
      fail_restore_.reset();
      return st;
    }
  }
  Bytes all;
  SLINGSHOT_RETURN_IF_ERROR(stream([&](ByteView b) {
    all.insert(all.end(), b.begin(), b.end());
    return Status::OK();
  }));
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(all, kStreamMagic, 1, 64u << 20, "fake VM stream"));
  Decoder d(f.body, "fake VM stream");
  std::string format = d.Str(64, "format");
  const bool apart = d.U8() != 0;
  ByteView state = d.Raw(d.remaining());
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  if (format != options_.stream_format) {
    return Status::Unsupported("a " + format + " stream does not restore on " + Name());
  }
  SLINGSHOT_ASSIGN_OR_RETURN(auto guest, FakeGuest::Load(state));
  if (apart) {
    if (!ram || (!ram->fill && ram->lazy_file.empty())) {
      return Status::InvalidArgument("this checkpoint keeps its RAM apart and the restore was given none");
    }
    if (ram->size != options_.guest_memory_bytes) {
      return Status::InvalidArgument("the RAM given is " + std::to_string(ram->size) + " bytes, the guest has " +
                                     std::to_string(options_.guest_memory_bytes));
    }
    Bytes memory(ram->size, 0);
    if (!ram->lazy_file.empty()) {
      SLINGSHOT_ASSIGN_OR_RETURN(memory, ReadFileBounded(ram->lazy_file, ram->size));
      if (memory.size() != ram->size) return Status::Corruption("the lazy RAM file has the wrong size");
    } else {
      SLINGSHOT_RETURN_IF_ERROR(ram->fill([&](uint64_t offset, ByteView b) -> Status {
        if (offset > memory.size() || b.size() > memory.size() - offset) {
          return Status::Corruption("RAM piece beyond the guest's memory");
        }
        std::copy(b.begin(), b.end(), memory.begin() + static_cast<ptrdiff_t>(offset));
        return Status::OK();
      }));
    }
    guest->SetMemory(std::move(memory));
  }
  MutexLock l(&mu_);
  SLINGSHOT_RETURN_IF_ERROR(Start(spec, std::move(guest)));
  ++restores_;
  last_restore_bytes_ = all.size();
  return RestoreStats{all.size(), 1.0};
}

Status FakeHypervisor::Destroy(const std::string& name) {
  MutexLock l(&mu_);
  auto it = vms_.find(name);
  if (it == vms_.end()) return Status::NotFound("no VM " + name);
  Directory& d = Dir();
  {
    MutexLock dl(&d.mu);
    for (const auto& [p, ep] : it->second.ports) d.guests.erase(ep.port);
  }
  vms_.erase(it);
  return Status::OK();
}

std::vector<VmInfo> FakeHypervisor::List() {
  MutexLock l(&mu_);
  std::vector<VmInfo> v;
  for (const auto& [n, vm] : vms_) v.push_back(VmInfo{n, VmState::kRunning, "fake"});
  return v;
}

Result<VmInfo> FakeHypervisor::Info(const std::string& name) {
  MutexLock l(&mu_);
  if (!vms_.count(name)) return Status::NotFound("no VM " + name);
  return VmInfo{name, VmState::kRunning, "fake"};
}

Result<Endpoint> FakeHypervisor::ServiceEndpoint(const std::string& name, uint16_t guest_port) {
  MutexLock l(&mu_);
  auto it = vms_.find(name);
  if (it == vms_.end()) return Status::NotFound("no VM " + name);
  auto p = it->second.ports.find(guest_port);
  if (p == it->second.ports.end()) {
    return Status::InvalidArgument("guest port " + std::to_string(guest_port) + " of " + name + " is not forwarded");
  }
  return p->second;
}

Result<HostMemory> FakeHypervisor::Memory() {
  MutexLock l(&mu_);
  uint64_t held = 0;
  for (const auto& [name, vm] : vms_) held += vm.spec.memory_mib;
  return HostMemory{options_.memory_mib, options_.memory_mib > held ? options_.memory_mib - held : 0};
}

void FakeHypervisor::OnDeath(DeathCallback callback) {
  MutexLock l(&mu_);
  on_death_ = std::move(callback);
}

void FakeHypervisor::Kill(const std::string& name, const std::string& why) {
  DeathCallback cb;
  {
    MutexLock l(&mu_);
    cb = on_death_;
  }
  (void)Destroy(name);
  if (cb) cb(name, why);
}

void FakeHypervisor::RefuseNextService() {
  MutexLock l(&mu_);
  refuse_next_ = true;
}
void FakeHypervisor::FailNextBoot(Status st) {
  MutexLock l(&mu_);
  fail_boot_ = std::move(st);
}
void FakeHypervisor::FailNextRestore(Status st) {
  MutexLock l(&mu_);
  fail_restore_ = std::move(st);
}
void FakeHypervisor::FailNextCheckpoint(Status st) {
  MutexLock l(&mu_);
  fail_checkpoint_ = std::move(st);
}
std::shared_ptr<FakeGuest> FakeHypervisor::Guest(const std::string& name) {
  MutexLock l(&mu_);
  auto it = vms_.find(name);
  return it == vms_.end() ? nullptr : it->second.guest;
}
std::optional<VmSpec> FakeHypervisor::SpecOf(const std::string& name) {
  MutexLock l(&mu_);
  auto it = vms_.find(name);
  if (it == vms_.end()) return std::nullopt;
  return it->second.spec;
}
int FakeHypervisor::boots() const {
  MutexLock l(&mu_);
  return boots_;
}
int FakeHypervisor::restores() const {
  MutexLock l(&mu_);
  return restores_;
}
uint64_t FakeHypervisor::last_restore_bytes() const {
  MutexLock l(&mu_);
  return last_restore_bytes_;
}

}  // namespace slingshot::fake
