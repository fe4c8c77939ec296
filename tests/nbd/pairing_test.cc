// Pairing over the network (pairing.h): real TLS 1.3 on loopback, a real
// home CA, and an impostor and a man in the middle that both fail.
#include "slingshot/net/pairing.h"

#include <gtest/gtest.h>

#include <thread>

#include "slingshot/base/mutex.h"
#include "slingshot/net/transport.h"
#include "slingshot/net/wire.h"

namespace slingshot::testing {
namespace {

struct Home {
  CertificateAuthority ca;
  TlsCredentials creds;
  PublicKey manifest_key;
};

Home MakeHome(const std::string& name) {
  Home h{*CertificateAuthority::Create(name + " CA", 3600), {}, SigningKey::Generate()->public_key()};
  h.creds = *h.ca.Issue(name, Role::kHome, 3600);
  return h;
}

PairingOffer OfferOf(const Home& h) {
  PairingOffer o;
  o.client_name = "alice";
  o.valid_seconds = 7200;
  o.ca = h.ca;
  o.home_creds = h.creds;
  o.manifest_key = h.manifest_key;
  o.home_address = "10.0.0.1:7390";
  return o;
}

// Answers nothing but Hello: what a home daemon's TLS looks like to a client.
struct NoRequests : RequestHandler {
  Status Handle(Connection&, uint32_t, wire::Message&&) override { return Status::InvalidArgument("no"); }
};

TEST(PairingCodeTest, CodesRoundTripAndTypingSlipsAreForgiven) {
  auto a = PairingCode::Generate();
  auto b = PairingCode::Generate();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->canonical(), b->canonical());
  EXPECT_EQ(a->canonical().size(), PairingCode::kChars);
  std::string shown = a->ToString();
  EXPECT_EQ(shown.size(), PairingCode::kChars + PairingCode::kChars / 4 - 1);
  auto back = PairingCode::Parse(shown);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->canonical(), a->canonical());
  // Lower case, spaces, and O/I/L for 0/1/1.
  auto sloppy = PairingCode::Parse("o1l2 3456 789a bcde fghj");
  ASSERT_TRUE(sloppy.ok()) << sloppy.status().ToString();
  EXPECT_EQ(sloppy->canonical(), "01123456789ABCDEFGHJ");
  auto bad_char = PairingCode::Parse("U000-0000-0000-0000-0000");
  EXPECT_EQ(bad_char.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bad_char.status().message().find("'U'"), std::string::npos) << bad_char.status().ToString();
  auto short_code = PairingCode::Parse("0000-0000");
  EXPECT_NE(short_code.status().message().find("8 characters, not 20"), std::string::npos)
      << short_code.status().ToString();
}

TEST(PairingTest, TheRightCodeGivesCredentialsThatTheHomeAccepts) {
  Home home = MakeHome("home");
  auto code = *PairingCode::Generate();
  auto listener = PairingListener::Start(OfferOf(home), code, "127.0.0.1", 0);
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  auto p = PairWithHome("127.0.0.1", (*listener)->port(), *PairingCode::Parse(code.ToString()), "alice-laptop");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto who = (*listener)->Wait(5000);
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  EXPECT_EQ(who->device, "alice-laptop");
  EXPECT_EQ(who->certificate.common_name, "alice");

  EXPECT_EQ(p->home_address, "10.0.0.1:7390");
  EXPECT_TRUE(p->manifest_key == home.manifest_key);
  EXPECT_EQ(p->creds.ca_pem, home.ca.cert_pem());
  auto info = InspectCertificate(p->creds.cert_pem);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->role, Role::kClient);
  EXPECT_EQ(info->common_name, "alice");
  EXPECT_EQ(info->fingerprint, who->certificate.fingerprint);
  EXPECT_TRUE(CheckKeyMatches(p->creds.cert_pem, p->creds.key_pem).ok());

  // The credentials open a TLS session with a home daemon that takes clients
  // of this CA only; the same key with another CA's certificate does not.
  NoRequests handler;
  ServerOptions so;
  so.host = "127.0.0.1";
  so.required_role = Role::kClient;
  auto daemon = Server::Start(home.creds, so, &handler);
  ASSERT_TRUE(daemon.ok());
  ConnectOptions co;
  co.expected_role = Role::kHome;
  auto c = Connection::Connect("127.0.0.1", (*daemon)->port(), p->creds, co);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->peer().common_name, "home");
  Home other = MakeHome("other");
  TlsCredentials forged = p->creds;
  forged.cert_pem = *other.ca.IssueForKeyOf(p->creds.cert_pem, "alice", Role::kClient, 3600);
  EXPECT_FALSE(Connection::Connect("127.0.0.1", (*daemon)->port(), forged, co).ok());
}

TEST(PairingTest, ACodeIsGoodForOnePairingOnly) {
  Home home = MakeHome("home");
  auto code = *PairingCode::Generate();
  auto listener = PairingListener::Start(OfferOf(home), code, "127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  ASSERT_TRUE(PairWithHome("127.0.0.1", (*listener)->port(), code, "first").ok());
  auto again = PairWithHome("127.0.0.1", (*listener)->port(), code, "second");
  EXPECT_EQ(again.status().code(), Status::Code::kPermissionDenied);
  EXPECT_NE(again.status().message().find("pairing is over"), std::string::npos) << again.status().ToString();
  EXPECT_EQ((*listener)->Wait(1000)->device, "first");
}

TEST(PairingTest, WrongCodesAreRefusedAndEndThePairingAfterTheLastTry) {
  Home home = MakeHome("home");
  auto code = *PairingCode::Generate();
  auto listener = PairingListener::Start(OfferOf(home), code, "127.0.0.1", 0, 2);
  ASSERT_TRUE(listener.ok());
  auto wrong = *PairingCode::Parse("0000-0000-0000-0000-0000");
  auto first = PairWithHome("127.0.0.1", (*listener)->port(), wrong, "guesser");
  EXPECT_EQ(first.status().code(), Status::Code::kPermissionDenied);
  EXPECT_NE(first.status().message().find("wrong pairing code"), std::string::npos) << first.status().ToString();
  EXPECT_EQ((*listener)->Wait(100).status().code(), Status::Code::kUnavailable);  // still open
  auto second = PairWithHome("127.0.0.1", (*listener)->port(), wrong, "guesser");
  EXPECT_NE(second.status().message().find("pairing is cancelled"), std::string::npos) << second.status().ToString();
  auto done = (*listener)->Wait(1000);
  EXPECT_EQ(done.status().code(), Status::Code::kPermissionDenied);
  EXPECT_NE(done.status().message().find("2 wrong pairing codes"), std::string::npos) << done.status().ToString();
  // Now even the right code gets nothing.
  EXPECT_EQ(PairWithHome("127.0.0.1", (*listener)->port(), code, "late").status().code(),
            Status::Code::kPermissionDenied);
}

TEST(PairingTest, NoClientMeansTheCodeExpires) {
  Home home = MakeHome("home");
  auto listener = PairingListener::Start(OfferOf(home), *PairingCode::Generate(), "127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  auto r = (*listener)->Wait(200);
  EXPECT_EQ(r.status().code(), Status::Code::kUnavailable);
  EXPECT_NE(r.status().message().find("expired"), std::string::npos);
}

// An impostor home that does not know the code answers with its own CA and
// a made-up proof: the client saves nothing.
struct Impostor : RequestHandler {
  Home self = MakeHome("evil");
  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override {
    if (!std::holds_alternative<wire::Pair>(m)) return Status::InvalidArgument("no");
    wire::Paired p;
    p.cert_pem = *self.ca.IssueForKeyOf(c.peer().cert_pem, "alice", Role::kClient, 3600);
    p.ca_pem = self.ca.cert_pem();
    p.manifest_key.assign(self.manifest_key.raw().begin(), self.manifest_key.raw().end());
    p.home_address = "6.6.6.6:7390";
    p.proof = Bytes(wire::kPairProofSize, 0x5a);
    return c.Send(request, p);
  }
};

TEST(PairingTest, AnImpostorHomeCannotProveTheCode) {
  Impostor impostor;
  ServerOptions so;
  so.host = "127.0.0.1";
  so.verify_client_ca = false;
  auto server = Server::Start(impostor.self.creds, so, &impostor);
  ASSERT_TRUE(server.ok());
  auto r = PairWithHome("127.0.0.1", (*server)->port(), *PairingCode::Generate(), "alice-laptop");
  EXPECT_EQ(r.status().code(), Status::Code::kPermissionDenied);
  EXPECT_NE(r.status().message().find("could not prove it knows the pairing code"), std::string::npos)
      << r.status().ToString();
}

// A man in the middle terminates the client's TLS and opens its own to the
// real home, relaying the client's Pair: the proof is bound to the client's
// session, so the home refuses it and the client gets no pairing.
struct Relay : RequestHandler {
  uint16_t home_port = 0;
  Mutex mu;
  Status relayed_reply GUARDED_BY(mu);
  Status RelayedReply() {
    MutexLock l(&mu);
    return relayed_reply;
  }
  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override {
    auto self = SelfSignedCredentials("mitm", Role::kPairing, 600);
    ConnectOptions co;
    co.verify_server_ca = false;
    auto up = Connection::Connect("127.0.0.1", home_port, *self, co);
    if (!up.ok()) return up.status();
    SLINGSHOT_RETURN_IF_ERROR((*up)->Send(request, m));
    auto reply = (*up)->Expect(request, wire::MessageType::kPaired);
    {
      MutexLock l(&mu);
      relayed_reply = reply.status();
    }
    if (!reply.ok()) return reply.status();
    return c.Send(request, *reply);
  }
};

TEST(PairingTest, AManInTheMiddleIsCaughtByTheChannelBinding) {
  Home home = MakeHome("home");
  auto code = *PairingCode::Generate();
  auto listener = PairingListener::Start(OfferOf(home), code, "127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  Relay relay;
  relay.home_port = (*listener)->port();
  Home mitm = MakeHome("mitm");
  ServerOptions so;
  so.host = "127.0.0.1";
  so.verify_client_ca = false;
  auto server = Server::Start(mitm.creds, so, &relay);
  ASSERT_TRUE(server.ok());
  auto r = PairWithHome("127.0.0.1", (*server)->port(), code, "alice-laptop");
  EXPECT_FALSE(r.ok());
  Status relayed = relay.RelayedReply();
  EXPECT_EQ(relayed.code(), Status::Code::kPermissionDenied);
  EXPECT_NE(relayed.message().find("wrong pairing code"), std::string::npos) << relayed.ToString();
  // The home is still waiting for the real client, which then pairs.
  EXPECT_EQ((*listener)->Wait(100).status().code(), Status::Code::kUnavailable);
  EXPECT_TRUE(PairWithHome("127.0.0.1", (*listener)->port(), code, "alice-laptop").ok());
}

}  // namespace
}  // namespace slingshot::testing
