// What every Hypervisor backend keeps the same way: its VMs by name, the
// name rules, the shutdown flag and the death callback. VmT is the backend's
// own per-VM record; it must have a `VmSpec spec` member.
#ifndef SLINGSHOT_HYPERVISOR_VM_REGISTRY_H_
#define SLINGSHOT_HYPERVISOR_VM_REGISTRY_H_

#include <cctype>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "slingshot/vm/hypervisor.h"
#include "slingshot/base/mutex.h"

namespace slingshot {

// InvalidArgument unless name has 1..48 letters, digits, '-', '_' or '.'.
inline Status ValidateVmName(const std::string& name) {
  if (name.empty() || name.size() > 48) {
    return Status::InvalidArgument("VM name must have 1..48 characters");
  }
  for (char c : name) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return Status::InvalidArgument("VM name '" + name +
                                     "' may hold only letters, digits, '-', '_' and '.'");
    }
  }
  return Status::OK();
}

// Thread-safe.
template <typename VmT>
class VmRegistry {
 public:
  // Records a new VM under spec.name. AlreadyExists if the name is taken,
  // IOError once Close() was called.
  Result<std::shared_ptr<VmT>> Reserve(const VmSpec& spec) {
    SLINGSHOT_RETURN_IF_ERROR(ValidateVmName(spec.name));
    MutexLock l(&mu_);
    if (closed_) return Status::IOError("hypervisor is shutting down");
    if (vms_.count(spec.name)) return Status::AlreadyExists("a VM named " + spec.name + " exists");
    auto vm = std::make_shared<VmT>();
    vm->spec = spec;
    vms_[spec.name] = vm;
    return vm;
  }

  // Drops vm if it is still the one recorded under its name.
  void Forget(const std::shared_ptr<VmT>& vm) {
    MutexLock l(&mu_);
    auto it = vms_.find(vm->spec.name);
    if (it != vms_.end() && it->second == vm) vms_.erase(it);
  }

  Result<std::shared_ptr<VmT>> Find(const std::string& name) {
    MutexLock l(&mu_);
    auto it = vms_.find(name);
    if (it == vms_.end()) return Status::NotFound("no VM named " + name);
    return it->second;
  }

  // Find and forget in one step (Destroy).
  Result<std::shared_ptr<VmT>> Remove(const std::string& name) {
    MutexLock l(&mu_);
    auto it = vms_.find(name);
    if (it == vms_.end()) return Status::NotFound("no VM named " + name);
    std::shared_ptr<VmT> vm = it->second;
    vms_.erase(it);
    return vm;
  }

  std::vector<std::shared_ptr<VmT>> All() {
    MutexLock l(&mu_);
    std::vector<std::shared_ptr<VmT>> out;
    for (auto& [name, vm] : vms_) out.push_back(vm);
    return out;
  }

  // Refuses new VMs from now on and hands over the recorded ones.
  std::vector<std::shared_ptr<VmT>> Close() {
    MutexLock l(&mu_);
    std::vector<std::shared_ptr<VmT>> out;
    for (auto& [name, vm] : vms_) out.push_back(vm);
    closed_ = true;
    vms_.clear();
    return out;
  }

  bool closed() {
    MutexLock l(&mu_);
    return closed_;
  }

  void SetDeathCallback(DeathCallback cb) {
    MutexLock l(&mu_);
    on_death_ = std::move(cb);
  }

  // Tells the death callback, if any (call without holding VM locks).
  void ReportDeath(const std::string& name, const std::string& why) {
    DeathCallback cb;
    {
      MutexLock l(&mu_);
      cb = on_death_;
    }
    if (cb) cb(name, why);
  }

 private:
  Mutex mu_;
  std::map<std::string, std::shared_ptr<VmT>> vms_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;
  DeathCallback on_death_ GUARDED_BY(mu_);
};

}  // namespace slingshot

#endif  // SLINGSHOT_HYPERVISOR_VM_REGISTRY_H_
