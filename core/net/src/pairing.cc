#include "slingshot/net/pairing.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cctype>
#include <optional>

#include "slingshot/base/openssl_util.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/net/transport.h"
#include "slingshot/net/wire.h"

namespace slingshot {
namespace {

// Crockford's base 32: no I, L, O or U, so a code read aloud or off a
// screen is not mistyped as another.
constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr char kClientLabel[] = "slingshot-pair-1 client";
constexpr char kHomeLabel[] = "slingshot-pair-1 home";

Result<Bytes> Hmac(const PairingCode& code, std::string_view label, ByteView binding, ByteView extra = {}) {
  Bytes msg(label.begin(), label.end());
  msg.insert(msg.end(), binding.begin(), binding.end());
  msg.insert(msg.end(), extra.begin(), extra.end());
  Bytes out(wire::kPairProofSize);
  size_t n = 0;
  const std::string& key = code.canonical();
  if (!EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(), msg.data(), msg.size(),
                 out.data(), out.size(), &n) ||
      n != out.size()) {
    return Status::IOError("HMAC-SHA256: " + OpenSslError());
  }
  return out;
}

bool SameProof(ByteView a, ByteView b) {
  return a.size() == b.size() && a.size() == wire::kPairProofSize && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// What the home's proof covers besides the binding: every other field.
Bytes PairedDigest(wire::Paired p) {
  p.proof.clear();
  Bytes frame = wire::EncodeFrame(0, p);
  ChunkId d = ChunkId::Of(frame);
  return Bytes(d.bytes.begin(), d.bytes.end());
}

}  // namespace

Result<PairingCode> PairingCode::Generate() {
  uint8_t random[kChars];
  if (RAND_bytes(random, sizeof(random)) != 1) return Status::IOError("random pairing code: " + OpenSslError());
  PairingCode c;
  for (uint8_t r : random) c.chars_ += kAlphabet[r & 31];
  OPENSSL_cleanse(random, sizeof(random));
  return c;
}

Result<PairingCode> PairingCode::Parse(std::string_view text) {
  PairingCode c;
  for (char ch : text) {
    if (ch == '-' || ch == ' ') continue;
    char u = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    // Crockford's decoding: the letters that look like digits are those digits.
    if (u == 'O') u = '0';
    if (u == 'I' || u == 'L') u = '1';
    if (std::string_view(kAlphabet).find(u) == std::string_view::npos) {
      return Status::InvalidArgument(std::string("the pairing code holds '") + ch +
                                     "', which no code has: copy it again from slingshot-home pair");
    }
    c.chars_ += u;
  }
  if (c.chars_.size() != kChars) {
    return Status::InvalidArgument("the pairing code has " + std::to_string(c.chars_.size()) + " characters, not " +
                                   std::to_string(kChars) + ": copy it again from slingshot-home pair");
  }
  return c;
}

std::string PairingCode::ToString() const {
  std::string s;
  for (size_t i = 0; i < chars_.size(); ++i) {
    if (i && i % 4 == 0) s += '-';
    s += chars_[i];
  }
  return s;
}

// --- the home side ---

struct PairingListener::Impl : RequestHandler {
  Impl(PairingOffer o, PairingCode c, int max_wrong) : offer(std::move(o)), code(std::move(c)), max_wrong(max_wrong) {}

  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override {
    auto* pair = std::get_if<wire::Pair>(&m);
    if (!pair) {
      return Status::InvalidArgument(std::string("a pairing listener takes only Pair, not ") +
                                     wire::MessageTypeName(wire::TypeOf(m)));
    }
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes binding, c.ChannelBinding());
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes expect, Hmac(code, kClientLabel, binding));
    {
      MutexLock l(&mu);
      if (paired || wrong >= max_wrong) {
        return Status::PermissionDenied("this pairing is over (its code was used or cancelled): run slingshot-home "
                                        "pair again for a new code");
      }
      if (!SameProof(pair->proof, expect)) {
        ++wrong;
        LogWarning("pairing: " + c.peer().Describe() + " sent a wrong code (" + std::to_string(wrong) + " of " +
                   std::to_string(max_wrong) + ")");
        cv.SignalAll();
        if (wrong >= max_wrong) {
          return Status::PermissionDenied("wrong pairing code; that was the last try, and the pairing is cancelled: "
                                          "run slingshot-home pair again for a new code");
        }
        return Status::PermissionDenied("wrong pairing code (or a connection relayed by someone else): check the "
                                        "code slingshot-home pair printed");
      }
      paired = true;  // one code, one client: from here on it is spent
    }
    wire::Paired reply;
    Status st = [&]() -> Status {
      SLINGSHOT_ASSIGN_OR_RETURN(reply.cert_pem,
                                 offer.ca.IssueForKeyOf(c.peer().cert_pem, offer.client_name, Role::kClient, offer.valid_seconds,
                                                        offer.user.empty() ? offer.client_name : offer.user));
      reply.ca_pem = offer.ca.cert_pem();
      reply.manifest_key.assign(offer.manifest_key.raw().begin(), offer.manifest_key.raw().end());
      reply.home_address = offer.home_address;
      SLINGSHOT_ASSIGN_OR_RETURN(reply.proof, Hmac(code, kHomeLabel, binding, PairedDigest(reply)));
      return c.Send(request, reply);
    }();
    MutexLock l(&mu);
    if (st.ok()) {
      auto info = InspectCertificate(reply.cert_pem);
      result = PairedClient{pair->device, c.peer().address, info.ok() ? *info : CertificateInfo{}};
    } else {
      failure = st.Annotate("pairing " + c.peer().Describe());
    }
    cv.SignalAll();
    return st;
  }

  PairingOffer offer;
  const PairingCode code;
  const int max_wrong;
  std::unique_ptr<Server> server;
  Mutex mu;
  CondVar cv;
  bool paired GUARDED_BY(mu) = false;
  int wrong GUARDED_BY(mu) = 0;
  std::optional<PairedClient> result GUARDED_BY(mu);
  Status failure GUARDED_BY(mu);
};

PairingListener::PairingListener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PairingListener::~PairingListener() {
  if (impl_->server) impl_->server->Stop();
}

Result<std::unique_ptr<PairingListener>> PairingListener::Start(PairingOffer offer, PairingCode code,
                                                                const std::string& host, uint16_t port,
                                                                int max_wrong_codes) {
  if (max_wrong_codes < 1) return Status::InvalidArgument("max_wrong_codes must be at least 1");
  TlsCredentials creds = offer.home_creds;
  auto impl = std::make_unique<Impl>(std::move(offer), std::move(code), max_wrong_codes);
  ServerOptions so;
  so.host = host;
  so.port = port;
  so.verify_client_ca = false;  // a client that pairs has no certificate from us yet
  so.max_connections = 8;
  so.idle_timeout_ms = 60000;
  so.software = "slingshot-home pairing";
  SLINGSHOT_ASSIGN_OR_RETURN(impl->server, Server::Start(creds, so, impl.get()));
  return std::unique_ptr<PairingListener>(new PairingListener(std::move(impl)));
}

uint16_t PairingListener::port() const { return impl_->server->port(); }

Result<PairedClient> PairingListener::Wait(int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  MutexLock l(&impl_->mu);
  while (true) {
    if (impl_->result) return *impl_->result;
    if (!impl_->failure.ok()) return impl_->failure;
    if (impl_->wrong >= impl_->max_wrong) {
      return Status::PermissionDenied(std::to_string(impl_->wrong) +
                                      " wrong pairing codes were tried: the pairing is cancelled (if that was not "
                                      "you, someone on this network is guessing)");
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= end) {
      return Status::Unavailable("no client paired within " + std::to_string(timeout_ms / 1000) +
                                 " s: the code has expired; run slingshot-home pair again");
    }
    impl_->cv.WaitFor(&impl_->mu, end - now);
  }
}

// --- the client side ---

Result<Pairing> PairWithHome(const std::string& host, uint16_t port, const PairingCode& code,
                             const std::string& device, int timeout_ms) {
  // The key this client will hold, in a self-signed certificate for now.
  SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials self, SelfSignedCredentials(device.empty() ? "client" : device,
                                                                        Role::kPairing, 3600));
  ConnectOptions co;
  co.verify_server_ca = false;  // we do not know the home's CA yet: the proofs stand for it
  co.expected_role = Role::kHome;
  co.timeout_ms = timeout_ms;
  co.software = "slingshot-client pairing";
  SLINGSHOT_ASSIGN_OR_RETURN(auto conn, Connection::Connect(host, port, self, co));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes binding, conn->ChannelBinding());
  wire::Pair req;
  req.device = device;
  SLINGSHOT_ASSIGN_OR_RETURN(req.proof, Hmac(code, kClientLabel, binding));
  SLINGSHOT_RETURN_IF_ERROR(conn->Send(1, req, timeout_ms));
  SLINGSHOT_ASSIGN_OR_RETURN(wire::Message m, conn->Expect(1, wire::MessageType::kPaired, timeout_ms));
  auto& reply = std::get<wire::Paired>(m);
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes expect, Hmac(code, kHomeLabel, binding, PairedDigest(reply)));
  if (!SameProof(reply.proof, expect)) {
    return Status::PermissionDenied("the home at " + host + ":" + std::to_string(port) +
                                    " could not prove it knows the pairing code: this is not your home, or "
                                    "someone is in between; nothing was saved");
  }
  // Proven by the home; now everything must also be consistent.
  SLINGSHOT_RETURN_IF_ERROR(VerifyCertificate(conn->peer().cert_pem, reply.ca_pem, "the home's TLS certificate"));
  SLINGSHOT_RETURN_IF_ERROR(VerifyCertificate(reply.cert_pem, reply.ca_pem, "the issued certificate"));
  SLINGSHOT_RETURN_IF_ERROR(CheckKeyMatches(reply.cert_pem, self.key_pem).Annotate("the issued certificate"));
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(reply.cert_pem));
  if (info.role != Role::kClient) return Status::PermissionDenied("the home issued a " + info.role_name + " certificate, not a client's");
  Pairing p;
  SLINGSHOT_ASSIGN_OR_RETURN(p.manifest_key, PublicKey::FromRaw(reply.manifest_key));
  p.creds.ca_pem = reply.ca_pem;
  p.creds.cert_pem = reply.cert_pem;
  p.creds.key_pem = self.key_pem;
  p.home_address = reply.home_address;
  return p;
}

}  // namespace slingshot
