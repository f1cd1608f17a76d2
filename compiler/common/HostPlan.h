//===- HostPlan.h - what every target's host plan shares -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Both targets turn the planned @forward into a C++ `forward` function: a
// straight-line sequence of kernel calls (CPU) or launches (CUDA) over
// buffers at moe-plan-memory's offsets of one arena, plus the descriptor
// `moert_compiled_program` (weight manifest, KV-cache plan, dimensions).
// HostPlanEmitter walks the function, gives every value its buffer, checks
// the cache plan and writes the descriptor; a target only says how each op
// becomes code (`emitOp`).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_COMMON_HOSTPLAN_H
#define MOE_COMPILER_COMMON_HOSTPLAN_H

#include "dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace mlir::moe {

/// Largest arena the targets plan, in floats per batch token: times the
/// 2^20 tokens a forward call may take, it still fits in int64.
constexpr int64_t kMaxArenaFloatsPerToken = int64_t(1) << 36;

struct EmitOptions {
  /// Longest sequence a session may reach; 0 = the model's
  /// max_position_embeddings.
  int64_t maxPositions = 0;
  /// Name shown by the binary's --help.
  std::string modelName = "model";
};

/// `s` as a C/C++ string literal: every byte that is not printable ASCII is
/// escaped, so any string (a path, a tensor name) is safe in emitted code.
/// Every string that enters emitted code goes through this function.
std::string cppQuoted(StringRef s);
/// `s` made safe inside a `//` comment of emitted code: bytes that could end
/// or continue the comment (control characters, `\`, `?`) become `_`.
std::string cppComment(StringRef s);
/// `v` as a C++ float literal that reads back to the same float.
std::string cppFloat(double v);
/// `v` as a C++ double literal that reads back to the same double.
std::string cppDouble(double v);

class HostPlanEmitter {
public:
  HostPlanEmitter(ModuleOp module, const EmitOptions &options,
                  StringRef targetName)
      : module(module), options(options), targetName(targetName) {}
  virtual ~HostPlanEmitter() = default;

  /// Walks @forward, calling emitOp for each op. Diagnoses and fails on
  /// anything the target cannot run.
  LogicalResult run();

  /// The manifest and cache tables (in an anonymous namespace already open)
  /// and the scratch-size function.
  void writeTables(raw_ostream &os) const;
  /// Closes the anonymous namespace and defines moert_compiled_program;
  /// `targetFields` initialises the descriptor's target-specific tail.
  void writeDescriptor(raw_ostream &os, StringRef targetFields) const;

  /// The weight manifest, in the order of moert_exec::weights.
  ArrayRef<WeightSourceOp> weights() const { return manifest; }
  /// The body of `forward`, as emitted.
  StringRef forwardBody() const { return body; }

protected:
  virtual LogicalResult emitOp(Operation *op) = 0;

  /// Gives `v` its buffer in the arena (getFloatsPerToken(v) floats per
  /// batch token) at moe-plan-memory's offset, declaring it in `forward`.
  std::string allocate(Value v, bool ints = false);
  /// Offset (floats per batch token) of the scratch memory `op` uses.
  int64_t scratch(Operation *op);
  /// The C++ name of a weight operand, `W<i>` in manifest order.
  std::string weight(Value v);
  /// The C++ name of an activation; records a value without one (a weight
  /// used as an activation), which fails the op being emitted.
  std::string name(Value v);
  /// The feature width of a [tokens, features] activation.
  static int64_t width(Value v) {
    return cast<RankedTensorType>(v.getType()).getDimSize(1);
  }
  /// Checks the cache an attention op reads against the plan, records its
  /// shape and ties its result cache to the argument. Returns null on error.
  struct Cache {
    int64_t kvHeads = 0, headDim = 0, capacity = 0, window = 0;
    bool seen = false;
  };
  const Cache *planCache(AttentionOp a);

  ModuleOp module;
  const EmitOptions &options;
  StringRef targetName;
  std::string body;
  llvm::raw_string_ostream out{body};
  std::vector<WeightSourceOp> manifest;
  llvm::StringMap<size_t> manifestIndex;
  std::vector<Cache> caches;
  int64_t maxPositions = 0, vocab = 0, hidden = 0;
  int64_t arenaPerToken = 0;
  /// Floats after the arena that do not scale with the batch: a target's
  /// own scratch (the CUDA decode attention's split partials).
  int64_t workspaceFloats = 0;

private:
  LogicalResult collectManifest();
  /// Checks what the emitted code relies on beyond the op verifiers, so
  /// that whatever passes compiles into a memory-safe binary: forward's
  /// signature, logits of vocab_size, embeddings of the token ids, expert
  /// indices and permutations from the ops that make them in range, and
  /// arena offsets that fit.
  LogicalResult verifyContract(func::FuncOp func);
  LogicalResult emitForward(func::FuncOp func);
  llvm::DenseMap<Value, std::string> names;
  Value logitsValue;
  Value notAWeight, unnamed;
  Operation *arenaTooLarge = nullptr;
  int64_t cacheBytes = 0;
  StringRef weightDir;
};

} // namespace mlir::moe

#endif // MOE_COMPILER_COMMON_HOSTPLAN_H
