//===- HostPlan.h - printing a target's launch plan -------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Prints a lowered module (moert IR, after --moe-lower-to-cpu or
// --moe-lower-to-cuda) as C++: `forward`, a straight-line sequence of
// kernel calls (CPU) or launches (CUDA) over the arena views, plus the
// descriptor `moert_compiled_program` (weight manifest, KV-cache plan,
// dimensions); for CUDA also the device code, one `__global__` kernel per
// moert.kernel. The printers decide nothing: every kernel, template
// argument, grid, variant and buffer is in the IR. They check what they
// print (names, bounds, a manifest entry per weight) and refuse IR that is
// not lowered.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_COMMON_HOSTPLAN_H
#define MOE_COMPILER_COMMON_HOSTPLAN_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace mlir::moe {

struct EmitOptions {
  /// Name shown by the binary's --help.
  std::string modelName = "model";
  /// The absolute directory the executable and its quantised weights file
  /// are written to (moe-compile's -o): where moert_model_load looks for
  /// weights marked `artifact` unless told otherwise (the executables look
  /// beside themselves first). Empty: no such default.
  std::string artifactDir;
  /// The quantised weights file's build id ("moe.build" in its metadata),
  /// which the runtime requires of the file it maps; empty when none.
  std::string artifactBuild;
  /// The tokenizer blob embedded in the program (frontends/hf/Tokenizer.h;
  /// moert_program::tokenizer), and the file it was converted from; empty:
  /// none.
  std::string tokenizer;
  std::string tokenizerSource;
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

/// The CPU target's program (moe-translate --moe-to-cpp).
LogicalResult printCpuProgram(ModuleOp module, const EmitOptions &options,
                              raw_ostream &os);

struct CudaProgram {
  std::string deviceCode; // the .cu file
  std::string hostPlan;   // the .cpp file
  std::vector<std::string> kernelNames;
};

/// The CUDA target's program (moe-translate --moe-to-cuda and
/// --moe-to-cuda-host).
FailureOr<CudaProgram> printCudaProgram(ModuleOp module,
                                        const EmitOptions &options);

} // namespace mlir::moe

#endif // MOE_COMPILER_COMMON_HOSTPLAN_H
