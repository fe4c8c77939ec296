// Admission: what a surrogate can host, and whether one more replica fits.
//
// A replica takes one of max_replicas slots and need_mib of memory (its
// guest's memory and the hypervisor's overhead for it). It is admitted only
// if all three hold:
//   - a slot is free;
//   - committed + need_mib <= budget_mib, where committed is what every
//     admitted replica needs and the budget is fixed at start (configured,
//     or the host's free memory then, less the reserve): QEMU guests take
//     their memory as they touch it, so the host's free memory alone would
//     admit more than fits once they have;
//   - the host's free memory now, less the reserve and less what admitted
//     replicas still being made will take, is at least need_mib: Xen's free
//     memory shrinks as soon as a domain is made, and something besides the
//     agent may use the host.
// A refusal is ResourceExhausted and names what is short. Thread-safe.
#ifndef SLINGSHOT_REPLICA_ADMISSION_H_
#define SLINGSHOT_REPLICA_ADMISSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "slingshot/base/mutex.h"
#include "slingshot/base/status.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot {

struct AdmissionOptions {
  int max_replicas = 8;
  uint64_t budget_mib = 0;   // 0: the host's free memory at start, less reserve_mib
  uint64_t reserve_mib = 256;  // kept for the host: dom0 or the OS, the agent and its cache
};

struct AdmissionState {
  int max_replicas = 0, replicas = 0;
  uint64_t budget_mib = 0, committed_mib = 0;
  uint64_t host_free_mib = 0;  // now, less the reserve and what replicas being made will take
};

class Admission {
 public:
  using MemoryFn = std::function<Result<HostMemory>()>;
  // memory: the host's memory now (Hypervisor::Memory). Reads it once to
  // fix the budget when options.budget_mib is 0.
  static Result<std::unique_ptr<Admission>> Make(AdmissionOptions options, MemoryFn memory);

  // Holds an admitted replica's slot and memory until it is destroyed.
  class Ticket {
   public:
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    // The replica's VM runs: its memory now shows in the host's free memory.
    void Started();

   private:
    friend class Admission;
    struct Shared;
    Ticket(std::shared_ptr<Shared> shared, uint64_t need_mib) : shared_(std::move(shared)), need_mib_(need_mib) {}
    std::shared_ptr<Shared> shared_;
    uint64_t need_mib_;
    bool started_ = false;
  };

  // what: "notepad for alice", for the message.
  Result<std::unique_ptr<Ticket>> Admit(const std::string& what, uint64_t need_mib);
  AdmissionState State();

 private:
  Admission(AdmissionOptions options, MemoryFn memory, uint64_t budget_mib);
  const AdmissionOptions options_;
  const MemoryFn memory_;
  const uint64_t budget_mib_;
  std::shared_ptr<Ticket::Shared> shared_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_ADMISSION_H_
