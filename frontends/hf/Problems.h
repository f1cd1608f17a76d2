//===- Problems.h - collecting a frontend's problems -----------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_PROBLEMS_H
#define MOE_FRONTENDS_HF_PROBLEMS_H

#include "llvm/Support/Error.h"
#include "llvm/Support/FormatVariadic.h"

#include <string>
#include <vector>

namespace mlir::moe::hf {

/// Collects one message per problem, so a user sees them all at once.
class Problems {
public:
  static constexpr size_t kLimit = 20;

  void add(const llvm::Twine &message) {
    if (messages.size() < kLimit)
      messages.push_back(message.str());
    ++count;
  }
  void add(llvm::Error error) {
    llvm::handleAllErrors(std::move(error), [&](const llvm::ErrorInfoBase &e) {
      add(e.message());
    });
  }
  bool empty() const { return count == 0; }

  llvm::Error takeError() {
    llvm::Error all = llvm::Error::success();
    for (const std::string &m : messages)
      all = llvm::joinErrors(
          std::move(all),
          llvm::createStringError(llvm::inconvertibleErrorCode(), m));
    if (count > messages.size())
      all = llvm::joinErrors(
          std::move(all),
          llvm::createStringError(llvm::inconvertibleErrorCode(),
                                  llvm::formatv("... and {0} more problems",
                                                count - messages.size())));
    return all;
  }

private:
  std::vector<std::string> messages;
  size_t count = 0;
};

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_PROBLEMS_H
