//===- GGUFImporter.h - GGUF model file importer ----------------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Imports a Mixtral GGUF file (llama.cpp's format: general.architecture =
// llama with llama.expert_count) as moe IR. The file is memory-mapped and
// only its header is read: the weights stay where they are, and the
// manifest names their byte ranges in the file, in the file's own storage
// types (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K). The header is
// parsed by runtime/src/gguf.cpp, the parser the runtime checks the file
// with again at load time. docs/frontends.md says what is accepted.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_GGUF_GGUFIMPORTER_H
#define MOE_FRONTENDS_GGUF_GGUFIMPORTER_H

#include "frontends/ModelSpec.h"
#include "runtime/src/gguf.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>

namespace mlir::moe::gguf {

/// Whether `path` names a GGUF file: a regular file whose first four bytes
/// are "GGUF" (false for a directory, a missing file or another format).
bool isGGUFFile(llvm::StringRef path);

/// A GGUF file memory-mapped with its header parsed (`header` points into
/// `buffer`).
struct MappedFile {
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  ::moert::gguf::File header;
};

/// Maps the regular file `path` and parses its GGUF header; a parse error
/// is "PATH: message".
llvm::Expected<MappedFile> mapFile(llvm::StringRef path);

/// The GGUF name of a weight (`blk.L.attn_q.weight`, ...). Experts stacked
/// in one tensor per layer (`blk.L.ffn_gate_exps.weight`) are named
/// `blk.L.ffn_gate_exps.weight[E]` in the manifest: expert E's slice.
std::string tensorName(const ModelSpec &spec, WeightRole role, int64_t layer,
                       int64_t expert, bool stackedExperts);

/// Imports the GGUF file `path`. Every problem is reported with the file
/// and the key or tensor it concerns.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
importModel(mlir::MLIRContext &context, llvm::StringRef path);

} // namespace mlir::moe::gguf

#endif // MOE_FRONTENDS_GGUF_GGUFIMPORTER_H
