// Pairing over the network (DESIGN.md §6: "client and home pair once; the
// home issues the client a certificate").
//
// At home, `slingshot-home pair NAME` opens a pairing listener and prints a
// one-time code; on the client, `slingshot-client pair HOST:PORT --code C`
// connects and receives its credentials, the home's manifest key and the
// home's address. The code is the only thing carried by hand.
//
// The exchange, inside one TLS 1.3 session:
//   - The client makes a fresh Ed25519 key and a self-signed certificate
//     for it and presents it; the private key never leaves the client.
//   - Client -> home: Pair{device, proof_c}, proof_c = HMAC-SHA256(code,
//     "slingshot-pair-1 client" || binding). binding is the session's
//     tls-exporter (Connection::ChannelBinding): a man in the middle runs
//     two sessions with two bindings, and cannot make a proof for either
//     without the code, so the home refuses a relayed request.
//   - The home checks proof_c (constant time), issues a client certificate
//     for the key of the certificate the client presented, and answers
//     Paired{cert, CA, manifest key, address, proof_h}, proof_h =
//     HMAC-SHA256(code, "slingshot-pair-1 home" || binding || SHA-256 of
//     the other fields). The client believes the CA and the manifest key
//     only if proof_h checks out, and also checks that the home's TLS
//     certificate and its own new one chain to that CA, and that the new
//     one is for its key.
// A code is 100 random bits (20 base-32 characters, in groups of four), so
// a proof seen by an impostor cannot be brute-forced offline. It is good for
// one pairing; the listener closes after a few wrong codes or its timeout.
#ifndef SLINGSHOT_NET_PAIRING_H_
#define SLINGSHOT_NET_PAIRING_H_

#include <cstdint>
#include <memory>
#include <string>

#include "slingshot/base/keys.h"
#include "slingshot/base/status.h"
#include "slingshot/net/tls.h"

namespace slingshot {

class PairingCode {
 public:
  static constexpr size_t kChars = 20;  // 5 bits each
  static Result<PairingCode> Generate();
  // Accepts any case, with or without dashes and spaces; InvalidArgument
  // saying what is wrong otherwise (length, a character not in the alphabet).
  static Result<PairingCode> Parse(std::string_view text);
  // "K7QF-2MXA-PL9D-W3HT-VN4C"
  std::string ToString() const;
  const std::string& canonical() const { return chars_; }

 private:
  std::string chars_;  // kChars characters of the alphabet, no dashes
};

// What the home gives a client that pairs.
struct PairingOffer {
  std::string client_name;   // the certificate's CN: the device
  std::string user;          // the user it belongs to (capability.h); "" = client_name
  int64_t valid_seconds = 365 * 86400;
  CertificateAuthority ca;
  TlsCredentials home_creds;  // the listener's own TLS identity (role "home")
  PublicKey manifest_key;
  std::string home_address;   // "host:port" of the home daemon, as clients reach it
};

struct PairedClient {
  std::string device;  // what the client called itself
  std::string address; // where it connected from
  CertificateInfo certificate;
};

// The home side: serves one pairing, then stops listening.
class PairingListener {
 public:
  static Result<std::unique_ptr<PairingListener>> Start(PairingOffer offer, PairingCode code,
                                                        const std::string& host, uint16_t port,
                                                        int max_wrong_codes = 3);
  ~PairingListener();
  uint16_t port() const;
  // Returns once a client has paired; PermissionDenied once max_wrong_codes
  // wrong codes were tried (the pairing is then cancelled); DeadlineExceeded
  // after timeout_ms.
  Result<PairedClient> Wait(int timeout_ms);

  struct Impl;

 private:
  explicit PairingListener(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The client side.
struct Pairing {
  TlsCredentials creds;     // its key, its certificate and the home CA
  PublicKey manifest_key;
  std::string home_address;
};
Result<Pairing> PairWithHome(const std::string& host, uint16_t port, const PairingCode& code,
                             const std::string& device, int timeout_ms = 20000);

}  // namespace slingshot

#endif  // SLINGSHOT_NET_PAIRING_H_
