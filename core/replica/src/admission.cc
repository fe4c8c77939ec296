#include "slingshot/replica/admission.h"

#include <algorithm>

namespace slingshot {

struct Admission::Ticket::Shared {
  Mutex mu;
  int replicas GUARDED_BY(mu) = 0;
  uint64_t committed_mib GUARDED_BY(mu) = 0;
  uint64_t pending_mib GUARDED_BY(mu) = 0;  // of committed: replicas not yet started
};

Admission::Ticket::~Ticket() {
  MutexLock l(&shared_->mu);
  --shared_->replicas;
  shared_->committed_mib -= need_mib_;
  if (!started_) shared_->pending_mib -= need_mib_;
}

void Admission::Ticket::Started() {
  MutexLock l(&shared_->mu);
  if (started_) return;
  started_ = true;
  shared_->pending_mib -= need_mib_;
}

Admission::Admission(AdmissionOptions options, MemoryFn memory, uint64_t budget_mib)
    : options_(options), memory_(std::move(memory)), budget_mib_(budget_mib),
      shared_(std::make_shared<Ticket::Shared>()) {}

Result<std::unique_ptr<Admission>> Admission::Make(AdmissionOptions options, MemoryFn memory) {
  if (options.max_replicas < 1) return Status::InvalidArgument("a surrogate must host at least one replica");
  uint64_t budget = options.budget_mib;
  if (budget == 0) {
    SLINGSHOT_ASSIGN_OR_RETURN(HostMemory m, memory());
    if (m.free_mib <= options.reserve_mib) {
      return Status::ResourceExhausted("this host has " + std::to_string(m.free_mib) +
                                       " MiB free, no more than the " + std::to_string(options.reserve_mib) +
                                       " MiB it keeps in reserve: there is no memory for replicas");
    }
    budget = m.free_mib - options.reserve_mib;
  }
  return std::unique_ptr<Admission>(new Admission(options, std::move(memory), budget));
}

Result<std::unique_ptr<Admission::Ticket>> Admission::Admit(const std::string& what, uint64_t need_mib) {
  SLINGSHOT_ASSIGN_OR_RETURN(HostMemory host, memory_());
  MutexLock l(&shared_->mu);
  const std::string refused = "this surrogate cannot host " + what + ": ";
  const std::string elsewhere = "; use another surrogate, or go on at home";
  if (shared_->replicas >= options_.max_replicas) {
    return Status::ResourceExhausted(refused + "it already runs " + std::to_string(shared_->replicas) + " of its " +
                                     std::to_string(options_.max_replicas) + " replicas" + elsewhere);
  }
  const uint64_t budget_left = budget_mib_ - std::min(budget_mib_, shared_->committed_mib);
  if (need_mib > budget_left) {
    return Status::ResourceExhausted(refused + "it needs " + std::to_string(need_mib) + " MiB of memory, and " +
                                     std::to_string(budget_left) + " MiB of the " + std::to_string(budget_mib_) +
                                     " MiB for replicas are free (" + std::to_string(shared_->replicas) +
                                     " replicas hold the rest)" + elsewhere);
  }
  const uint64_t held = options_.reserve_mib + shared_->pending_mib;
  const uint64_t host_left = host.free_mib > held ? host.free_mib - held : 0;
  if (need_mib > host_left) {
    return Status::ResourceExhausted(refused + "it needs " + std::to_string(need_mib) + " MiB of memory, and the host has " +
                                     std::to_string(host.free_mib) + " MiB free, of which " +
                                     std::to_string(options_.reserve_mib) + " MiB are its reserve and " +
                                     std::to_string(shared_->pending_mib) + " MiB go to replicas being made" +
                                     elsewhere);
  }
  ++shared_->replicas;
  shared_->committed_mib += need_mib;
  shared_->pending_mib += need_mib;
  return std::unique_ptr<Ticket>(new Ticket(shared_, need_mib));
}

AdmissionState Admission::State() {
  auto host = memory_();
  MutexLock l(&shared_->mu);
  AdmissionState s;
  s.max_replicas = options_.max_replicas;
  s.replicas = shared_->replicas;
  s.budget_mib = budget_mib_;
  s.committed_mib = shared_->committed_mib;
  if (host.ok()) {
    const uint64_t held = options_.reserve_mib + shared_->pending_mib;
    s.host_free_mib = host->free_mib > held ? host->free_mib - held : 0;
  }
  return s;
}

}  // namespace slingshot
