// slingshot-home: the home server. `run` is the daemon (home_server.h); the
// other commands set it up (init, services, pairing, keys, the CA) and
// manage its chunk store (import/export of disk and memory images,
// verification, statistics, garbage collection, bundles).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "slingshot/store/bundle.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/cli/cli.h"
#include "slingshot/base/coding.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/base/file_util.h"
#include "slingshot/store/gc.h"
#include "slingshot/base/keys.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/net/pairing.h"
#include "slingshot/net/tls.h"
#include "slingshot/net/transport.h"
#include "slingshot/replica/retention.h"
#include "home_server.h"

namespace slingshot {
namespace {

using cli::po::value;
using cli::PrintFigure;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }
std::string Rate(uint64_t bytes, double s) { return HumanBytes(static_cast<uint64_t>(bytes / std::max(s, 1e-9))) + "/s"; }
std::string Fixed(double v, int digits = 2) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.*f", digits, v);
  return b;
}

Result<std::unique_ptr<ChunkStore>> OpenStore(const cli::po::variables_map& vm, bool create) {
  ChunkStoreOptions o;
  o.mode = ChunkStoreOptions::Mode::kTransactional;
  o.create_if_missing = create;
  o.compression_level = vm["compression-level"].as<int>();
  o.db_cache_bytes = vm["db-cache-mb"].as<uint64_t>() << 20;
  o.reserve_bytes = 16ull << 20;  // room for Berkeley DB's recovery on a full disk
  return ChunkStore::Open(vm["store"].as<std::string>(), o);
}

ChunkWriterOptions WriterOptions(const cli::po::variables_map& vm) {
  ChunkWriterOptions w;
  w.threads = vm["threads"].as<int>();
  w.compression_level = vm["compression-level"].as<int>();
  return w;
}

void PrintIngest(const IngestStats& s, double secs) {
  PrintFigure("bytes", HumanBytes(s.logical_bytes) + " in " + std::to_string(s.chunks) + " chunks");
  PrintFigure("zero", HumanBytes(s.zero_bytes) + " (" + std::to_string(s.zero_chunks) + " chunks, not stored)");
  PrintFigure("duplicate", HumanBytes(s.dup_bytes) + " (" + std::to_string(s.dup_chunks) + " chunks)");
  PrintFigure("new", HumanBytes(s.new_bytes) + " (" + std::to_string(s.new_chunks) + " chunks) stored as " +
                         HumanBytes(s.stored_bytes));
  PrintFigure("time", Fixed(secs, 3) + " s (" + Rate(s.logical_bytes, secs) + ")");
}

Status StoreInit(const cli::po::variables_map& vm) {
  const std::string dir = vm["store"].as<std::string>();
  if (std::filesystem::exists(dir + "/STORE")) return Status::AlreadyExists("a store already exists in " + dir);
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, true));
  std::printf("created transactional chunk store in %s\n", dir.c_str());
  return Status::OK();
}

Status ImportDiskCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  DiskImportOptions o;
  o.chunk_size = vm["chunk-size"].as<uint32_t>();
  o.writer = WriterOptions(vm);
  auto t0 = Clock::now();
  const std::string image = vm["image"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(DiskImport imp, ImportDisk(image, store.get(), o));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkId table_id, store->PutObject(imp.table.Encode()));
  const std::string ref = "disk/" + vm["name"].as<std::string>();
  SLINGSHOT_RETURN_IF_ERROR(store->SetRef({ref, ObjectKind::kDiskTable, table_id}));
  double secs = Seconds(t0);
  std::printf("imported %s as %s (table %s)\n", image.c_str(), ref.c_str(), table_id.Short().c_str());
  PrintIngest(imp.stats, secs);
  return Status::OK();
}

Result<Ref> RefOfKind(ChunkStore* store, const std::string& name, ObjectKind kind) {
  SLINGSHOT_ASSIGN_OR_RETURN(Ref r, store->GetRef(name));
  if (r.kind != kind) {
    return Status::InvalidArgument("ref " + name + " is a " + ObjectKindName(r.kind) + ", not a " + ObjectKindName(kind));
  }
  return r;
}

Status ExportDiskCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  SLINGSHOT_ASSIGN_OR_RETURN(Ref r, RefOfKind(store.get(), "disk/" + vm["name"].as<std::string>(), ObjectKind::kDiskTable));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes tb, store->GetObject(r.object));
  SLINGSHOT_ASSIGN_OR_RETURN(DiskTable t, DiskTable::Decode(tb));
  auto t0 = Clock::now();
  const std::string out = vm["output"].as<std::string>();
  SLINGSHOT_RETURN_IF_ERROR(ExportDisk(t, store.get(), out));
  double secs = Seconds(t0);
  std::printf("exported %s to %s\n", r.name.c_str(), out.c_str());
  PrintFigure("bytes", HumanBytes(t.image_size));
  PrintFigure("time", Fixed(secs, 3) + " s (" + Rate(t.image_size, secs) + ")");
  return Status::OK();
}

Status ImportMemoryCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  ChunkerOptions co;
  co.min_size = vm["min-chunk"].as<uint32_t>();
  co.avg_size = vm["avg-chunk"].as<uint32_t>();
  co.max_size = vm["max-chunk"].as<uint32_t>();
  SLINGSHOT_RETURN_IF_ERROR(co.Validate());
  const std::string in = vm["image"].as<std::string>();
  UniqueFd fd(in == "-" ? ::dup(0) : ::open(in.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("open " + in, errno);
  auto t0 = Clock::now();
  MemoryImageWriter w(store.get(), co, WriterOptions(vm));
  Bytes buf(4u << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("read " + in, errno);
    if (n == 0) break;
    SLINGSHOT_RETURN_IF_ERROR(w.Write(ByteView(buf.data(), static_cast<size_t>(n))));
  }
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkList list, w.Finish());
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkId list_id, store->PutObject(list.Encode()));
  const std::string ref = "memory/" + vm["name"].as<std::string>();
  SLINGSHOT_RETURN_IF_ERROR(store->SetRef({ref, ObjectKind::kChunkList, list_id}));
  std::printf("imported memory image %s as %s (%zu chunks, list %s)\n", in.c_str(), ref.c_str(), list.entries.size(),
              list_id.Short().c_str());
  PrintIngest(w.stats(), Seconds(t0));
  return Status::OK();
}

Status ExportMemoryCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  SLINGSHOT_ASSIGN_OR_RETURN(Ref r, RefOfKind(store.get(), "memory/" + vm["name"].as<std::string>(), ObjectKind::kChunkList));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes lb, store->GetObject(r.object));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkList list, ChunkList::Decode(lb));
  const std::string out = vm["output"].as<std::string>();
  UniqueFd fd(out == "-" ? ::dup(1) : ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("create " + out, errno);
  SLINGSHOT_RETURN_IF_ERROR(ReadMemoryImage(list, store.get(), [&](ByteView b) { return WriteAll(fd.get(), b.data(), b.size(), out); }));
  if (out != "-") std::fprintf(stderr, "exported %s (%s) to %s\n", r.name.c_str(), HumanBytes(list.total_size).c_str(), out.c_str());
  return Status::OK();
}

Status VerifyCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  auto t0 = Clock::now();
  uint64_t bad = 0;
  SLINGSHOT_ASSIGN_OR_RETURN(uint64_t checked, store->VerifyAll([&](const ChunkId&, const Status& st) {
    ++bad;
    std::fprintf(stderr, "BAD %s\n", st.ToString().c_str());
  }));
  uint64_t missing = 0;
  Status walk = WalkReachable(store.get(), {}, [](const ChunkId&, ByteView) { return Status::OK(); },
                              [&](const ChunkId& id) -> Status {
                                SLINGSHOT_ASSIGN_OR_RETURN(bool has, store->Contains(id));
                                if (!has) {
                                  ++missing;
                                  std::fprintf(stderr, "MISSING chunk %s\n", id.ToHex().c_str());
                                }
                                return Status::OK();
                              });
  PrintFigure("chunks checked", std::to_string(checked));
  PrintFigure("damaged", std::to_string(bad));
  PrintFigure("missing", std::to_string(missing));
  PrintFigure("time", Fixed(Seconds(t0), 3) + " s");
  if (!walk.ok()) return walk.Annotate("a ref's objects are damaged or missing");
  if (bad || missing) {
    return Status::Corruption(std::to_string(bad) + " damaged and " + std::to_string(missing) +
                              " missing chunks; re-import the affected images or import a bundle that holds them");
  }
  std::printf("store %s is intact\n", store->dir().c_str());
  return Status::OK();
}

Status StatsCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkStoreStats s, store->Stats());
  std::printf("store %s\n", store->dir().c_str());
  PrintFigure("chunks", std::to_string(s.chunks));
  PrintFigure("raw bytes", HumanBytes(s.raw_bytes));
  PrintFigure("stored bytes", HumanBytes(s.stored_bytes));
  PrintFigure("compression", s.stored_bytes ? Fixed(double(s.raw_bytes) / double(s.stored_bytes)) + "x" : "-");
  PrintFigure("objects", std::to_string(s.objects));
  PrintFigure("refs", std::to_string(s.refs));
  PrintFigure("packs", std::to_string(s.packs) + " holding " + HumanBytes(s.pack_file_bytes) + ", " +
                           HumanBytes(s.pack_file_bytes > s.pack_live_bytes ? s.pack_file_bytes - s.pack_live_bytes : 0) +
                           " of it garbage or headers");
  SLINGSHOT_ASSIGN_OR_RETURN(std::vector<ServiceUsage> usage, MeasureUsage(store.get()));
  for (const auto& u : usage) {
    PrintFigure(u.service.empty() ? "refs of no service" : "service " + u.service, DescribeUsage(u));
  }
  return Status::OK();
}

Status RefsCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  SLINGSHOT_ASSIGN_OR_RETURN(auto refs, store->ListRefs());
  for (const auto& r : refs) std::printf("%-40s %-10s %s\n", r.name.c_str(), ObjectKindName(r.kind), r.object.ToHex().c_str());
  return Status::OK();
}

Status GcCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  if (vm.count("ref-delete")) {
    for (const auto& n : vm["ref-delete"].as<std::vector<std::string>>()) {
      SLINGSHOT_RETURN_IF_ERROR(store->GetRef(n).status());
      SLINGSHOT_RETURN_IF_ERROR(store->DeleteRef(n));
      std::printf("deleted ref %s\n", n.c_str());
    }
  }
  auto t0 = Clock::now();
  SLINGSHOT_ASSIGN_OR_RETURN(GcStats g, CollectGarbage(store.get()));
  PrintFigure("refs", std::to_string(g.refs));
  PrintFigure("live chunks", std::to_string(g.live_chunks));
  PrintFigure("swept chunks", std::to_string(g.swept_chunks));
  PrintFigure("live objects", std::to_string(g.live_objects));
  PrintFigure("swept objects", std::to_string(g.swept_objects));
  PrintFigure("packs rewritten", std::to_string(g.compaction.packs_removed) + " (" +
                                     std::to_string(g.compaction.chunks_moved) + " chunks moved, " +
                                     HumanBytes(g.compaction.bytes_reclaimed) + " reclaimed)");
  PrintFigure("time", Fixed(Seconds(t0), 3) + " s");
  return Status::OK();
}

Status BundleExportCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  BundleExportOptions o;
  if (vm.count("ref")) o.refs = vm["ref"].as<std::vector<std::string>>();
  o.zstd_level = vm["zstd-level"].as<int>();
  const std::string out = vm["output"].as<std::string>();
  auto t0 = Clock::now();
  SLINGSHOT_ASSIGN_OR_RETURN(BundleStats s, ExportBundle(store.get(), out, o));
  std::printf("wrote bundle %s\n", out.c_str());
  PrintFigure("refs", std::to_string(s.refs));
  PrintFigure("objects", std::to_string(s.objects));
  PrintFigure("chunks", std::to_string(s.chunks) + " (" + HumanBytes(s.chunk_bytes) + ")");
  PrintFigure("file", HumanBytes(s.file_bytes));
  PrintFigure("time", Fixed(Seconds(t0), 3) + " s");
  return Status::OK();
}

Status BundleImportCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, vm.count("create") > 0));
  BundleImportOptions o;
  std::optional<PublicKey> key;
  if (vm.count("trust")) {
    SLINGSHOT_ASSIGN_OR_RETURN(key, PublicKey::Load(vm["trust"].as<std::string>()));
    o.trusted_key = &*key;
  }
  const std::string in = vm["input"].as<std::string>();
  auto t0 = Clock::now();
  SLINGSHOT_ASSIGN_OR_RETURN(BundleStats s, ImportBundle(in, store.get(), o));
  std::printf("imported bundle %s (every chunk verified)\n", in.c_str());
  PrintFigure("refs", std::to_string(s.refs));
  PrintFigure("objects", std::to_string(s.objects));
  PrintFigure("chunks", std::to_string(s.chunks) + " (" + HumanBytes(s.chunk_bytes) + ")");
  PrintFigure("time", Fixed(Seconds(t0), 3) + " s");
  return Status::OK();
}

Status KeyInitCmd(const cli::po::variables_map& vm) {
  const std::string path = vm["key"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(SigningKey k, SigningKey::Generate());
  SLINGSHOT_RETURN_IF_ERROR(k.Save(path));
  SLINGSHOT_RETURN_IF_ERROR(k.public_key().Save(path + ".pub"));
  std::printf("created home key %s (mode 0600) and %s.pub, fingerprint %s\n", path.c_str(), path.c_str(),
              k.public_key().Fingerprint().c_str());
  return Status::OK();
}

Status KeyShowCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(SigningKey k, SigningKey::Load(vm["key"].as<std::string>()));
  std::printf("%s\n", k.public_key().Fingerprint().c_str());
  return Status::OK();
}

// --- certificates and the chunk service ---

constexpr int64_t kDay = 24 * 3600;

Status CaInitCmd(const cli::po::variables_map& vm) {
  const std::string dir = vm["tls-dir"].as<std::string>();
  const std::string name = vm["name"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateAuthority ca, CertificateAuthority::Create(name + " CA", 20 * 365 * kDay));
  SLINGSHOT_RETURN_IF_ERROR(ca.Save(dir + "/ca"));
  SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials home, ca.Issue(name, Role::kHome, 5 * 365 * kDay));
  SLINGSHOT_RETURN_IF_ERROR(home.Save(dir + "/home"));
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(ca.cert_pem()));
  std::printf("created the home CA in %s/ca (fingerprint %s) and the home's own credentials in %s/home\n",
              dir.c_str(), info.fingerprint.c_str(), dir.c_str());
  return Status::OK();
}

Status CredentialsIssueCmd(const cli::po::variables_map& vm) {
  const std::string role_name = vm["role"].as<std::string>();
  const Role role = ParseRole(role_name);
  if (role != Role::kClient && role != Role::kSurrogate && role != Role::kHome) {
    return Status::InvalidArgument("--role must be client, surrogate or home, not \"" + role_name + "\"");
  }
  const int64_t days = vm["days"].as<int64_t>();
  if (days <= 0 || days > 3650) return Status::InvalidArgument("--days must be between 1 and 3650");
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateAuthority ca, CertificateAuthority::Load(vm["tls-dir"].as<std::string>() + "/ca"));
  const std::string name = vm["name"].as<std::string>();
  if (vm.count("user") && role != Role::kClient) return Status::InvalidArgument("--user is for client credentials");
  SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials c,
                             role == Role::kClient
                                 ? ca.IssueClient(name, vm.count("user") ? vm["user"].as<std::string>() : name, days * kDay)
                                 : ca.Issue(name, role, days * kDay));
  const std::string out = vm["out"].as<std::string>();
  SLINGSHOT_RETURN_IF_ERROR(c.Save(out));
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(c.cert_pem));
  std::printf("issued %s \"%s\" (certificate %s, valid %lld days) into %s\n", role_name.c_str(), info.common_name.c_str(),
              info.fingerprint.c_str(), static_cast<long long>(days), out.c_str());
  return Status::OK();
}

// --- the daemon and its services ---

Status InitCmd(const cli::po::variables_map& vm) {
  const std::string store = vm["store"].as<std::string>();
  const std::string key = vm["key"].as<std::string>();
  const std::string tls = vm["tls-dir"].as<std::string>();
  if (!std::filesystem::exists(store + "/STORE")) {
    SLINGSHOT_RETURN_IF_ERROR(StoreInit(vm));
  }
  if (!std::filesystem::exists(key)) SLINGSHOT_RETURN_IF_ERROR(KeyInitCmd(vm));
  if (!std::filesystem::exists(tls + "/ca/ca.pem")) SLINGSHOT_RETURN_IF_ERROR(CaInitCmd(vm));
  std::error_code ec;
  std::filesystem::create_directories(vm["services-dir"].as<std::string>(), ec);
  std::printf("home ready: store %s, key %s, CA %s/ca\n", store.c_str(), key.c_str(), tls.c_str());
  return Status::OK();
}

Status RunCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto store, OpenStore(vm, false));
  SLINGSHOT_ASSIGN_OR_RETURN(SigningKey key, SigningKey::Load(vm["key"].as<std::string>()));
  const std::string tls = vm["tls-dir"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateAuthority ca, CertificateAuthority::Load(tls + "/ca"));
  SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials creds, TlsCredentials::Load(tls + "/home"));
  SLINGSHOT_ASSIGN_OR_RETURN(auto listen, cli::ParseHostPort(vm["listen"].as<std::string>()));
  HomeOptions o;
  o.services_dir = vm["services-dir"].as<std::string>();
  o.listen_host = listen.first;
  o.listen_port = listen.second;
  o.checkpoint_inputs = vm["checkpoint-inputs"].as<uint64_t>();
  o.checkpoint_seconds = vm["checkpoint-seconds"].as<int>();
  o.keep_checkpoints = vm["keep-checkpoints"].as<uint32_t>();
  o.gc_seconds = vm["gc-seconds"].as<int>();
  o.record_ram_working_set = vm["record-ram-working-set"].as<bool>();
  if (o.keep_checkpoints == 0 || o.gc_seconds <= 0) {
    return Status::InvalidArgument("--keep-checkpoints and --gc-seconds must be positive");
  }
  o.capability_max_seconds = vm["capability-max-seconds"].as<int>();
  o.hypervisor.backend = vm["hypervisor"].as<std::string>();
  o.hypervisor.accel = vm["accel"].as<std::string>();
  o.hypervisor.xen_guest_type = vm["xen-guest-type"].as<std::string>();
  o.hypervisor.live_checkpoints = vm["live-checkpoints"].as<bool>();
  o.hypervisor.network_prefix = "slhom";  // an agent in the same dom0 has its own
  if (o.checkpoint_inputs == 0 || o.checkpoint_seconds <= 0) {
    return Status::InvalidArgument("--checkpoint-inputs and --checkpoint-seconds must be positive");
  }
  cli::BlockStopSignals();
  SLINGSHOT_ASSIGN_OR_RETURN(auto home, HomeServer::Start(store.get(), std::move(key), std::move(ca), creds, o));
  std::printf("slingshot-home listening on %s:%u; services in %s\n", listen.first.c_str(), home->port(),
              o.services_dir.c_str());
  std::fflush(stdout);
  int sig = cli::WaitForStopSignal();
  std::printf("stopping on %s\n", strsignal(sig));
  std::fflush(stdout);
  home->Stop();
  return Status::OK();
}

Status ServiceCreateCmd(const cli::po::variables_map& vm) {
  ServiceDef d;
  d.name = vm["name"].as<std::string>();
  d.owner = vm["owner"].as<std::string>();
  d.type = vm["type"].as<std::string>();
  d.cmdline = vm["cmdline"].as<std::string>();
  d.memory_mib = vm["memory-mb"].as<uint32_t>();
  d.vcpus = vm["vcpus"].as<uint32_t>();
  if (vm.count("disk")) d.disk_image = vm["disk"].as<std::string>();
  d.disk_size_mb = vm["disk-size-mb"].as<uint64_t>();
  d.service_port = vm["service-port"].as<uint16_t>();
  if (vm.count("extra-port")) d.extra_ports = vm["extra-port"].as<std::vector<uint16_t>>();
  d.state_on_disk = vm.count("state-on-disk") > 0;
  const std::string dir = vm["services-dir"].as<std::string>();
  SLINGSHOT_RETURN_IF_ERROR(CreateService(dir, d, vm["kernel"].as<std::string>(),
                                          vm.count("initrd") ? vm["initrd"].as<std::string>() : ""));
  std::printf("created service %s in %s/%s; the home daemon boots it and publishes its first checkpoint\n",
              d.name.c_str(), dir.c_str(), d.name.c_str());
  return Status::OK();
}

Status ServiceListCmd(const cli::po::variables_map& vm) {
  const std::string dir = vm["services-dir"].as<std::string>();
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    auto line = [&](const char* file, const char* otherwise) {
      auto bytes = ReadFileBounded((e.path() / file).string(), 4096);
      std::string s = bytes.ok() ? std::string(bytes->begin(), bytes->end()) : otherwise;
      while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
      return s;
    };
    // usage: written by the daemon after each garbage collection.
    const std::string usage = line("usage", "");
    std::printf("%-24s %s%s%s\n", name.c_str(), line("status", "no checkpoint yet").c_str(), usage.empty() ? "" : "; ",
                usage.c_str());
  }
  if (ec) return Status::IOError("list " + dir + ": " + ec.message());
  return Status::OK();
}

// The user a paired device belongs to: --user, else its own name.
std::string User(const cli::po::variables_map& vm, const std::string& device) {
  return vm.count("user") ? vm["user"].as<std::string>() : device;
}

// The folder way: credentials written here, carried to the client by hand.
Status PairToFolder(const cli::po::variables_map& vm, const std::string& name, const std::string& address) {
  const std::string out = vm["out"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateAuthority ca, CertificateAuthority::Load(vm["tls-dir"].as<std::string>() + "/ca"));
  SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials c, ca.IssueClient(name, User(vm, name), 365 * kDay));
  SLINGSHOT_ASSIGN_OR_RETURN(SigningKey key, SigningKey::Load(vm["key"].as<std::string>()));
  SLINGSHOT_RETURN_IF_ERROR(c.Save(out));
  SLINGSHOT_RETURN_IF_ERROR(key.public_key().Save(out + "/manifest-key.pub"));
  SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(out + "/home-address", AsBytes(address + "\n"), 0644));
  std::printf("paired client \"%s\": its credentials, the home's manifest key and address are in %s.\n"
              "Move that folder to the client (it holds a private key) and run: slingshot-client pair %s\n",
              name.c_str(), out.c_str(), out.c_str());
  return Status::OK();
}

// The network way (pairing.h): a one-time code, and a listener that serves
// one client.
Status PairCmd(const cli::po::variables_map& vm) {
  const std::string name = vm["name"].as<std::string>();
  const std::string address = vm["address"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(auto home_addr, cli::ParseHostPort(address));
  if (vm.count("out")) return PairToFolder(vm, name, address);
  const std::string tls = vm["tls-dir"].as<std::string>();
  PairingOffer offer;
  offer.client_name = name;
  offer.user = User(vm, name);
  SLINGSHOT_RETURN_IF_ERROR(UserScope(offer.user).status());
  offer.valid_seconds = 365 * kDay;
  SLINGSHOT_ASSIGN_OR_RETURN(offer.ca, CertificateAuthority::Load(tls + "/ca"));
  SLINGSHOT_ASSIGN_OR_RETURN(offer.home_creds, TlsCredentials::Load(tls + "/home"));
  SLINGSHOT_ASSIGN_OR_RETURN(SigningKey key, SigningKey::Load(vm["key"].as<std::string>()));
  offer.manifest_key = key.public_key();
  offer.home_address = address;
  SLINGSHOT_ASSIGN_OR_RETURN(auto listen, cli::ParseHostPort(vm["listen"].as<std::string>()));
  SLINGSHOT_ASSIGN_OR_RETURN(PairingCode code, PairingCode::Generate());
  const std::string shown = code.ToString();
  SLINGSHOT_ASSIGN_OR_RETURN(auto listener, PairingListener::Start(std::move(offer), std::move(code), listen.first,
                                                                   listen.second, vm["tries"].as<int>()));
  const int timeout_s = vm["timeout"].as<int>();
  std::printf("pairing \"%s\": on the client, within %d s, run\n"
              "  slingshot-client pair %s:%u --code %s\n"
              "waiting on %s:%u ...\n",
              name.c_str(), timeout_s, home_addr.first.c_str(), listener->port(), shown.c_str(), listen.first.c_str(),
              listener->port());
  std::fflush(stdout);
  SLINGSHOT_ASSIGN_OR_RETURN(PairedClient client, listener->Wait(timeout_s * 1000));
  const int64_t days = (client.certificate.not_after - static_cast<int64_t>(std::time(nullptr))) / kDay;
  std::printf("paired client \"%s\" (it calls itself \"%s\", from %s); certificate %s, good for %lld days\n",
              name.c_str(), client.device.c_str(), client.address.c_str(), client.certificate.fingerprint.c_str(),
              static_cast<long long>(days));
  return Status::OK();
}

}  // namespace
}  // namespace slingshot

int main(int argc, char** argv) {
  using namespace slingshot;
  using cli::po::value;
  using Opts = cli::Options;
  using Pos = cli::Positional;
  cli::Program p;
  p.name = "slingshot-home";
  p.description =
      "The Slingshot home server: keeps the primary replicas' state in a transactional\n"
      "chunk store and hands out signed checkpoints.";
  p.default_config = "/etc/slingshot/home.conf";
  p.global_options = [](Opts& d) {
    d.add_options()
        ("store", value<std::string>()->default_value("/var/lib/slingshot/store"), "chunk store directory")
        ("key", value<std::string>()->default_value("/var/lib/slingshot/home.key"), "home signing key (Ed25519 PEM)")
        ("compression-level", value<int>()->default_value(1), "zstd level for new chunks")
        ("threads", value<int>()->default_value(0), "hashing/compression threads (0 = one per core)")
        ("db-cache-mb", value<uint64_t>()->default_value(64), "Berkeley DB buffer pool size")
        ("tls-dir", value<std::string>()->default_value("/var/lib/slingshot/tls"),
         "the home CA (ca/) and the home's TLS credentials (home/)")
        ("services-dir", value<std::string>()->default_value("/var/lib/slingshot/services"),
         "one folder per service (service create writes them, the daemon runs them)");
  };
  p.commands = {
      {"store init", "create an empty transactional chunk store", "[--store DIR]", cli::NoOptions, StoreInit},
      {"store import-disk", "import a raw disk image as 64 KiB chunks; names it disk/NAME", "IMAGE --name NAME",
       [](Opts& d, Pos& pos) {
         d.add_options()("image", value<std::string>()->required(), "raw disk image")
             ("name", value<std::string>()->required(), "name of the disk (ref disk/NAME)")
             ("chunk-size", value<uint32_t>()->default_value(kDefaultDiskChunkSize), "chunk size in bytes");
         pos.add("image", 1);
       },
       ImportDiskCmd},
      {"store export-disk", "write disk/NAME back out as a raw image, bit for bit", "NAME OUTPUT",
       [](Opts& d, Pos& pos) {
         d.add_options()("name", value<std::string>()->required(), "disk name")
             ("output", value<std::string>()->required(), "output file");
         pos.add("name", 1).add("output", 1);
       },
       ExportDiskCmd},
      {"store import-memory", "cut a memory image / save stream (or - for stdin) with FastCDC; names it memory/NAME",
       "IMAGE --name NAME",
       [](Opts& d, Pos& pos) {
         d.add_options()("image", value<std::string>()->required(), "file, or - for standard input")
             ("name", value<std::string>()->required(), "name (ref memory/NAME)")
             ("min-chunk", value<uint32_t>()->default_value(4096), "FastCDC minimum chunk size")
             ("avg-chunk", value<uint32_t>()->default_value(16384), "FastCDC average chunk size")
             ("max-chunk", value<uint32_t>()->default_value(65536), "FastCDC maximum chunk size");
         pos.add("image", 1);
       },
       ImportMemoryCmd},
      {"store export-memory", "write memory/NAME out as one stream (or - for stdout)", "NAME OUTPUT",
       [](Opts& d, Pos& pos) {
         d.add_options()("name", value<std::string>()->required(), "memory image name")
             ("output", value<std::string>()->required(), "output file, or -");
         pos.add("name", 1).add("output", 1);
       },
       ExportMemoryCmd},
      {"store verify", "read and hash-check every chunk; check every ref's graph is complete", "", cli::NoOptions, VerifyCmd},
      {"store stats", "print chunk, byte and ref counts", "", cli::NoOptions, StatsCmd},
      {"store refs", "list refs (the roots garbage collection keeps)", "", cli::NoOptions, RefsCmd},
      {"store gc", "delete chunks and objects no ref reaches", "[--ref-delete NAME]...",
       [](Opts& d, Pos&) {
         d.add_options()("ref-delete", value<std::vector<std::string>>(), "drop this ref first (repeatable)");
       },
       GcCmd},
      {"bundle export", "write refs and all they reach to a .tar.zst bundle", "OUTPUT [--ref NAME]...",
       [](Opts& d, Pos& pos) {
         d.add_options()("output", value<std::string>()->required(), "bundle file to write")
             ("ref", value<std::vector<std::string>>(), "ref to include (repeatable; default all)")
             ("zstd-level", value<int>()->default_value(3), "bundle compression level");
         pos.add("output", 1);
       },
       BundleExportCmd},
      {"bundle import", "verify a bundle and import it; sets its refs only if all is intact", "INPUT [--trust KEY.pub]",
       [](Opts& d, Pos& pos) {
         d.add_options()("input", value<std::string>()->required(), "bundle file")
             ("trust", value<std::string>(), "require every manifest to be signed by this public key")
             ("create", "create the store if it does not exist");
         pos.add("input", 1);
       },
       BundleImportCmd},
      {"key init", "create the home's Ed25519 signing key (0600) and its .pub", "[--key FILE]", cli::NoOptions, KeyInitCmd},
      {"key show", "print the home key's fingerprint", "[--key FILE]", cli::NoOptions, KeyShowCmd},
      {"ca init", "create the home's certificate authority and the home's own TLS credentials", "[--name NAME]",
       [](Opts& d, Pos&) {
         d.add_options()("name", value<std::string>()->default_value("slingshot-home"), "the home's name");
       },
       CaInitCmd},
      {"credentials issue", "issue TLS credentials signed by the home CA into a directory",
       "NAME --role client|surrogate --out DIR [--days N]",
       [](Opts& d, Pos& pos) {
         d.add_options()("name", value<std::string>()->required(), "who they are for")
             ("role", value<std::string>()->required(), "client, surrogate or home")
             ("out", value<std::string>()->required(), "directory to write ca.pem, cert.pem, key.pem into")
             ("days", value<int64_t>()->default_value(365), "validity in days")
             ("user", value<std::string>(), "client: the user it belongs to (default: NAME)");
         pos.add("name", 1);
       },
       CredentialsIssueCmd},
      {"init", "create the store, the signing key and the CA if missing (first-time setup)", "[--name NAME]",
       [](Opts& d, Pos&) {
         d.add_options()("name", value<std::string>()->default_value("slingshot-home"), "the home's name");
       },
       InitCmd},
      {"run", "the home daemon: run every service's primary, checkpoint it, serve clients and surrogates",
       "[--listen HOST:PORT]",
       [](Opts& d, Pos&) {
         d.add_options()("listen", value<std::string>()->default_value("0.0.0.0:7390"), "address to listen on")
             ("checkpoint-inputs", value<uint64_t>()->default_value(500), "checkpoint after this many inputs")
             ("checkpoint-seconds", value<int>()->default_value(60), "or this long after the first new input")
             ("keep-checkpoints", value<uint32_t>()->default_value(3),
              "checkpoints kept per service (and any a live capability may still read); older ones are collected")
             ("gc-seconds", value<int>()->default_value(60), "collect garbage at most this often, after new checkpoints")
             ("record-ram-working-set", value<bool>()->default_value(true),
              "once per service, restore its checkpoint in a scratch VM with its RAM on demand and record the order "
              "the guest reads it in, so that its first replica on a surrogate prefetches in that order (QEMU, FUSE)")
             ("capability-max-seconds", value<int>()->default_value(3600), "longest capability issued")
             ("hypervisor", value<std::string>()->default_value("auto"), "auto, qemu or xen")
             ("accel", value<std::string>()->default_value("auto"), "QEMU: auto, kvm or tcg")
             ("xen-guest-type", value<std::string>()->default_value("auto"),
              "Xen: auto (PVH, with live checkpoints, where Xen has hardware-assisted paging; else PV), pvh or pv")
             ("live-checkpoints", value<bool>()->default_value(true),
              "save a guest's memory while it runs (QEMU: a background snapshot, if userfaultfd allows; Xen: PVH); "
              "false pauses it for the whole save");
       },
       RunCmd},
      {"service create", "define a service from a guest kernel, initrd and disk image", "NAME --owner USER --kernel FILE ...",
       [](Opts& d, Pos& pos) {
         d.add_options()("name", value<std::string>()->required(), "service name")
             ("owner", value<std::string>()->required(), "the user it belongs to: only that user's paired devices "
                                                         "may use it (pair DEVICE --user USER)")
             ("kernel", value<std::string>()->required(), "guest kernel")
             ("initrd", value<std::string>(), "guest initrd")
             ("cmdline", value<std::string>()->default_value(""), "kernel command line")
             ("disk", value<std::string>(), "raw disk image to import (default: a blank disk)")
             ("disk-size-mb", value<uint64_t>()->default_value(8), "size of the blank disk")
             ("memory-mb", value<uint32_t>()->default_value(128), "guest memory")
             ("vcpus", value<uint32_t>()->default_value(1), "guest CPUs")
             ("type", value<std::string>()->default_value("rfb"), "service type (rfb: a VNC desktop)")
             ("service-port", value<uint16_t>()->default_value(5900), "the guest port the service listens on")
             ("extra-port", value<std::vector<uint16_t>>(), "another guest port to forward (repeatable)")
             ("state-on-disk", "the guest keeps all its state on its disk whenever it has consumed every input "
                               "(the notepad with slingshot.autosave=1): a surrogate on another hypervisor may "
                               "then boot it from a checkpoint's disk");
         pos.add("name", 1);
       },
       ServiceCreateCmd},
      {"service list", "list services and their last checkpoint", "", cli::NoOptions, ServiceListCmd},
      {"pair",
       "pair a client: print a one-time code and serve one pairing over TLS (or, with --out, write its "
       "credentials to a folder)",
       "NAME [--user USER] --address H:P [--listen H:P] [--timeout S] | NAME [--user USER] --address H:P --out DIR",
       [](Opts& d, Pos& pos) {
         d.add_options()("name", value<std::string>()->required(), "the device's name (its certificate's CN)")
             ("user", value<std::string>(), "the user it belongs to (default: NAME); pair each device of a user "
                                            "under its own NAME with the same --user")
             ("address", value<std::string>()->required(), "HOST:PORT where clients reach this home's daemon")
             ("listen", value<std::string>()->default_value("0.0.0.0:7392"), "where the pairing listener listens")
             ("timeout", value<int>()->default_value(600), "seconds the code stays good")
             ("tries", value<int>()->default_value(3), "wrong codes before the pairing is cancelled")
             ("out", value<std::string>(), "write the client's credentials to this folder instead (carry it by hand)");
         pos.add("name", 1);
       },
       PairCmd},
  };
  return cli::Main(p, argc, argv);
}
