//===- SafeTensors.h - safetensors header and index parsing -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// Reads the metadata of safetensors files and of model.safetensors.index.json
// without ever touching tensor data. Every length, offset and shape is checked
// before it is trusted; errors name the file and the tensor. Depends on LLVM
// Support only, so the fuzzer can build it alone.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_HF_SAFETENSORS_H
#define MOE_FRONTENDS_HF_SAFETENSORS_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::moe::hf {

/// The dtypes the safetensors format defines.
enum class STDType {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64
};
llvm::StringRef stringifySTDType(STDType type);
unsigned bytesPerElement(STDType type);

struct TensorInfo {
  std::string name;
  STDType dtype;
  llvm::SmallVector<int64_t, 4> shape;
  /// Byte range relative to the start of the data section.
  uint64_t begin = 0, end = 0;
};

struct SafeTensorsHeader {
  /// Absolute offset of the data section (8 + header length).
  uint64_t dataOffset = 0;
  /// Bytes after the header.
  uint64_t dataSize = 0;
  std::vector<TensorInfo> tensors;
  /// Name -> index into `tensors`.
  llvm::StringMap<size_t> byName;
};

/// "[4096, 14336]": shapes as messages print them.
std::string formatShape(llvm::ArrayRef<int64_t> shape);

/// Largest header accepted (the format's reference reader uses 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100 * 1000 * 1000;

/// Parses a header's JSON text for a file of `fileSize` bytes whose JSON is
/// `headerLength` bytes long; `file` names it in messages.
llvm::Expected<SafeTensorsHeader> parseSafeTensorsHeader(llvm::StringRef file,
                                                         llvm::StringRef json,
                                                         uint64_t fileSize);

/// Parses a complete file image (length prefix, header, data) held in memory.
llvm::Expected<SafeTensorsHeader> parseSafeTensorsImage(llvm::StringRef file,
                                                        llvm::StringRef image);

/// Reads and parses the header of the file at `path`, reading only the
/// length prefix and the header.
llvm::Expected<SafeTensorsHeader> readSafeTensorsHeader(llvm::StringRef path);

/// Parses model.safetensors.index.json text: tensor name -> shard file name.
/// Shard names must be plain file names (no directories, no "..").
llvm::Expected<llvm::StringMap<std::string>>
parseSafeTensorsIndex(llvm::StringRef file, llvm::StringRef json);

} // namespace mlir::moe::hf

#endif // MOE_FRONTENDS_HF_SAFETENSORS_H
