#include "slingshot/store/manifest.h"

#include <cstring>

#include "slingshot/base/coding.h"

namespace slingshot {
namespace {
constexpr Magic kBodyMagic = {'S', 'S', 'M', 'F'};
constexpr Magic kSignedMagic = {'S', 'S', 'M', 'S'};
constexpr uint16_t kVersion = 5;  // the body: 2 added the boot files, 3 state_on_disk, 4 service_port, 5 the RAM table
constexpr uint16_t kEnvelopeVersion = 1;  // the signed envelope
constexpr size_t kMaxBody = 4u << 20;
constexpr char kDomain[] = "slingshot manifest v1";  // the terminating NUL is signed too

Bytes SignedMessage(ByteView manifest) {
  Bytes msg(sizeof(kDomain) + manifest.size());
  std::memcpy(msg.data(), kDomain, sizeof(kDomain));
  std::memcpy(msg.data() + sizeof(kDomain), manifest.data(), manifest.size());
  return msg;
}

struct Envelope {
  ByteView manifest;
  ByteView signer;
  ByteView signature;
};

Result<Envelope> OpenEnvelope(ByteView bytes) {
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(bytes, kSignedMagic, kEnvelopeVersion, kMaxBody + 256, "signed manifest"));
  Decoder d(f.body, "signed manifest");
  uint32_t n = d.U32();
  if (d.ok() && n > kMaxBody) d.Fail("manifest length " + std::to_string(n) + " exceeds the limit");
  Envelope e;
  e.manifest = d.Raw(n);
  e.signer = d.Raw(PublicKey::kRawSize);
  e.signature = d.Raw(PublicKey::kSignatureSize);
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  return e;
}
}  // namespace

Bytes Manifest::Encode() const {
  Bytes body;
  Encoder e(&body);
  e.Str(service_id);
  e.Str(service_type);
  e.U64(epoch);
  e.U64(last_seq);
  e.I64(created_ns);
  e.U32(vm.memory_mib);
  e.U32(vm.vcpus);
  e.Str(vm.kernel_cmdline);
  e.Str(vm.backend);
  e.Str(vm.backend_config);
  e.Id(disk_table);
  e.U64(disk_size);
  e.Id(memory_list);
  e.U64(memory_size);
  e.Id(kernel);
  e.U64(kernel_size);
  e.Id(initrd);
  e.U64(initrd_size);
  e.U8(state_on_disk ? 1 : 0);
  e.U16(service_port);
  // A manifest whose RAM is in its stream stays version 4, which agents
  // that know no RAM tables still read.
  if (ram_table.IsNull()) return SealFrame(kBodyMagic, 4, body);
  e.Id(ram_table);
  e.U64(ram_size);
  return SealFrame(kBodyMagic, kVersion, body);
}

Result<Manifest> Manifest::Decode(ByteView bytes) {
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(bytes, kBodyMagic, kVersion, kMaxBody, "manifest"));
  Decoder d(f.body, "manifest");
  Manifest m;
  m.service_id = d.Str(256, "service id");
  m.service_type = d.Str(64, "service type");
  m.epoch = d.U64();
  m.last_seq = d.U64();
  m.created_ns = d.I64();
  m.vm.memory_mib = d.U32();
  m.vm.vcpus = d.U32();
  m.vm.kernel_cmdline = d.Str(4096, "kernel command line");
  m.vm.backend = d.Str(64, "backend");
  m.vm.backend_config = d.Str(1u << 20, "backend config");
  m.disk_table = d.Id();
  m.disk_size = d.U64();
  m.memory_list = d.Id();
  m.memory_size = d.U64();
  if (f.version >= 2) {
    m.kernel = d.Id();
    m.kernel_size = d.U64();
    m.initrd = d.Id();
    m.initrd_size = d.U64();
  }
  if (f.version >= 3) {
    uint8_t s = d.U8();
    if (d.ok() && s > 1) d.Fail("state_on_disk is " + std::to_string(s) + ", not 0 or 1");
    m.state_on_disk = s == 1;
  }
  if (f.version >= 4) {
    m.service_port = d.U16();
    if (d.ok() && m.service_port == 0) d.Fail("service port 0");
  }
  if (f.version >= 5) {
    m.ram_table = d.Id();
    m.ram_size = d.U64();
    if (d.ok() && m.ram_table.IsNull()) d.Fail("a version 5 manifest without a RAM table");
    if (d.ok() && m.ram_size != uint64_t{m.vm.memory_mib} << 20) {
      d.Fail("RAM table of " + std::to_string(m.ram_size) + " bytes for a VM of " + std::to_string(m.vm.memory_mib) +
             " MiB");
    }
  }
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  if (m.service_id.empty()) return Status::Corruption("manifest: empty service id");
  return m;
}

Bytes SignManifest(const Manifest& m, const SigningKey& key) {
  Bytes manifest = m.Encode();
  Bytes sig = key.Sign(SignedMessage(manifest));
  Bytes body;
  Encoder e(&body);
  e.U32(static_cast<uint32_t>(manifest.size()));
  e.Raw(manifest.data(), manifest.size());
  e.Raw(key.public_key().raw().data(), PublicKey::kRawSize);
  e.Raw(sig.data(), sig.size());
  return SealFrame(kSignedMagic, kEnvelopeVersion, body);
}

Result<Manifest> VerifyManifest(ByteView signed_manifest, const PublicKey& trusted) {
  SLINGSHOT_ASSIGN_OR_RETURN(Envelope env, OpenEnvelope(signed_manifest));
  SLINGSHOT_ASSIGN_OR_RETURN(PublicKey signer, PublicKey::FromRaw(env.signer));
  if (!(signer == trusted)) {
    return Status::Corruption("manifest is signed by key " + signer.Fingerprint() + ", not by the trusted home key " +
                              trusted.Fingerprint());
  }
  Status st = trusted.Verify(SignedMessage(env.manifest), env.signature);
  if (!st.ok()) return st.Annotate("manifest rejected");
  return Manifest::Decode(env.manifest);
}

Result<Manifest> DecodeSignedManifestUnverified(ByteView signed_manifest) {
  SLINGSHOT_ASSIGN_OR_RETURN(Envelope env, OpenEnvelope(signed_manifest));
  return Manifest::Decode(env.manifest);
}

}  // namespace slingshot
