//===- WeightFiles.cpp - a module's manifest against its files --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/WeightFiles.h"

#include "dialects/MoE/MoEOps.h"
#include "frontends/InputFiles.h"
#include "frontends/gguf/GGUFImporter.h"
#include "frontends/hf/SafeTensors.h"
#include "runtime/src/gguf.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

using namespace llvm;

namespace mlir::moe::hf {

namespace {

std::string pathOf(StringRef dir, StringRef file) {
  SmallString<256> path(dir);
  sys::path::append(path, file);
  return std::string(path);
}

StringRef weightDirOf(ModuleOp module) {
  auto dir = module->getAttrOfType<StringAttr>("moe.weight_dir");
  return dir ? dir.getValue() : StringRef();
}

/// The ggml type id of a weight element type (UINT32_MAX for none).
uint32_t ggmlTypeOf(Type t) {
  using namespace moert::gguf;
  if (auto quant = dyn_cast<QuantType>(t)) {
    switch (quant.getFormat()) {
    case QuantFormat::Q8_0:
      return kQ8_0;
    case QuantFormat::Q4_0:
      return kQ4_0;
    case QuantFormat::Q4_1:
      return kQ4_1;
    case QuantFormat::Q4_K:
      return kQ4_K;
    case QuantFormat::Q5_K:
      return kQ5_K;
    case QuantFormat::Q6_K:
      return kQ6_K;
    }
  }
  return t.isF32() ? kF32 : t.isF16() ? kF16 : t.isBF16() ? kBF16 : UINT32_MAX;
}

std::optional<STDType> storageType(Type t) {
  if (t.isF32())
    return STDType::F32;
  if (t.isF16())
    return STDType::F16;
  if (t.isBF16())
    return STDType::BF16;
  return std::nullopt;
}

} // namespace

std::vector<std::string> modelFilePaths(ModuleOp module) {
  std::vector<std::string> paths;
  StringRef dir = weightDirOf(module);
  for (auto source : module.getOps<WeightSourceOp>()) {
    if (source.getArtifact())
      continue; // beside a previous executable, not the model's
    std::string path = pathOf(dir, source.getFile());
    if (!llvm::is_contained(paths, path))
      paths.push_back(path);
  }
  if (!dir.empty())
    for (StringRef name : {"config.json", "model.safetensors.index.json"})
      paths.push_back(pathOf(dir, name));
  return paths;
}

LogicalResult verifyWeightFiles(ModuleOp module) {
  StringRef dir = weightDirOf(module);
  auto sources = llvm::to_vector(module.getOps<WeightSourceOp>());
  if (sources.empty())
    return success();
  if (!sys::path::is_absolute(dir))
    return module.emitError("moe.weight_dir must be an absolute path, got '")
           << dir << "'";
  StringMap<SafeTensorsHeader> headers;
  // GGUF files (a model imported by --import-gguf): mapped and parsed once.
  struct Gguf {
    std::unique_ptr<MemoryBuffer> image;
    moert::gguf::File file;
  };
  StringMap<std::unique_ptr<Gguf>> ggufs;
  // Files with no header (ONNX external data): their size when imported.
  auto raw = module->getAttrOfType<DictionaryAttr>("moe.raw_weight_files");
  if (module->hasAttr("moe.raw_weight_files") && !raw)
    return module.emitError("moe.raw_weight_files must be a dictionary");
  for (WeightSourceOp source : sources) {
    if (source.getArtifact())
      return source.emitOpError("weight '")
             << source.getName() << "' lives in " << source.getFile()
             << ", the quantised weights file of an executable moe-compile "
             << "built; compile from the model, or from --emit=mlir output, "
             << "which keeps the quantisation pending";
    std::string path = pathOf(dir, source.getFile());
    if (auto recorded =
            raw ? raw.getAs<IntegerAttr>(source.getFile()) : IntegerAttr()) {
      Expected<InputFile> input = InputFile::open(path);
      if (!input)
        return source.emitOpError("weight '")
               << source.getName() << "': " << toString(input.takeError());
      uint64_t size = input->size(), offset = uint64_t(source.getOffset()),
               bytes = uint64_t(source.getSizeInBytes());
      if (recorded.getInt() < 1 || size != uint64_t(recorded.getInt()))
        return source.emitOpError("weight '")
               << source.getName() << "': " << path << " is " << size
               << " bytes, but was " << recorded.getInt()
               << " bytes when the model was imported; the file changed: "
               << "import the model again";
      if (offset > size || bytes > size - offset)
        return source.emitOpError("weight '")
               << source.getName() << "': bytes [" << offset << ", "
               << offset + bytes << ") are beyond the end of " << path << " ("
               << size << " bytes)";
      // Scales stored apart from the values (ONNX Runtime's QMoE).
      uint64_t at = source.getScalesOffset().value_or(0),
               scales = uint64_t(source.getScalesSizeInBytes());
      if (at > size || scales > size - at)
        return source.emitOpError("weight '")
               << source.getName() << "': its scales at bytes [" << at << ", "
               << at + scales << ") are beyond the end of " << path << " ("
               << size << " bytes)";
      continue;
    }
    if (ggufs.count(path) || (!headers.count(path) && gguf::isGGUFFile(path))) {
      std::unique_ptr<Gguf> &g = ggufs[path];
      if (!g) {
        Expected<InputFile> input = InputFile::open(path);
        Expected<std::unique_ptr<MemoryBuffer>> image =
            input ? input->map() : input.takeError();
        if (!image)
          return source.emitOpError("weight '")
                 << source.getName() << "': " << toString(image.takeError());
        g = std::make_unique<Gguf>();
        g->image = std::move(*image);
        std::string error = moert::gguf::parse(
            reinterpret_cast<const unsigned char *>(g->image->getBufferStart()),
            g->image->getBufferSize(), g->file);
        if (!error.empty())
          return source.emitOpError("weight '")
                 << source.getName() << "': " << path << ": " << error;
      }
      // The tensor as the file holds it (a layout re-lays it out later).
      RankedTensorType type = source.getStoredType();
      std::vector<uint64_t> shape(type.getShape().begin(),
                                  type.getShape().end());
      std::string problem = moert::gguf::checkWeight(
          g->file, source.getName().str(), ggmlTypeOf(type.getElementType()),
          shape, uint64_t(source.getOffset()),
          uint64_t(source.getSizeInBytes()));
      if (!problem.empty())
        return source.emitOpError("weight '")
               << source.getName() << "': " << path << ": " << problem;
      continue;
    }
    auto it = headers.find(path);
    if (it == headers.end()) {
      Expected<SafeTensorsHeader> header = readSafeTensorsHeader(path);
      if (!header)
        return source.emitOpError("weight '")
               << source.getName() << "': " << toString(header.takeError());
      it = headers.try_emplace(path, std::move(*header)).first;
    }
    const SafeTensorsHeader &header = it->second;
    auto found = header.byName.find(source.getName());
    if (found == header.byName.end())
      return source.emitOpError("weight '")
             << source.getName() << "' is not in " << path;
    const TensorInfo &t = header.tensors[found->second];
    RankedTensorType type = source.getStoredType();
    std::optional<STDType> dtype = storageType(type.getElementType());
    if (!dtype || *dtype != t.dtype || ArrayRef(t.shape) != type.getShape())
      return source.emitOpError("weight '")
             << source.getName() << "' is " << stringifySTDType(t.dtype) << " "
             << formatShape(t.shape) << " in " << path << ", not " << type;
    uint64_t offset = header.dataOffset + t.begin;
    if (offset != uint64_t(source.getOffset()) ||
        t.end - t.begin != uint64_t(source.getSizeInBytes()))
      return source.emitOpError("weight '")
             << source.getName() << "' lies at bytes [" << offset << ", "
             << header.dataOffset + t.end << ") of " << path << ", not at ["
             << source.getOffset() << ", "
             << source.getOffset() + source.getSizeInBytes() << ")";
  }
  return success();
}

LogicalResult
checkWeightValues(ModuleOp module,
                  function_ref<void(uint64_t done, uint64_t total)> progress) {
  StringRef dir = weightDirOf(module);
  auto sources = llvm::to_vector(module.getOps<WeightSourceOp>());
  uint64_t total = 0, done = 0;
  for (WeightSourceOp source : sources)
    total += uint64_t(source.getSizeInBytes());
  constexpr uint64_t kChunk = 64 << 20; // bounded memory, whatever the model
  bool ok = true;
  unsigned reported = 0;
  StringMap<std::unique_ptr<InputFile>> files;
  for (WeightSourceOp source : sources) {
    std::string path = pathOf(dir, source.getFile());
    auto &file = files[path];
    if (!file) {
      Expected<InputFile> opened = InputFile::open(path);
      if (!opened)
        return source.emitOpError("weight '")
               << source.getName() << "': " << toString(opened.takeError());
      file = std::make_unique<InputFile>(std::move(*opened));
    }
    auto type = cast<RankedTensorType>(source.getType());
    if (isa<QuantType>(type.getElementType())) {
      // Block formats (from a GGUF file): their scales are not scanned.
      done += uint64_t(source.getSizeInBytes());
      continue;
    }
    unsigned bits = type.getElementTypeBitWidth();
    uint32_t mask = type.getElementType().isF32()   ? 0x7f800000u
                    : type.getElementType().isF16() ? 0x7c00u
                                                    : 0x7f80u;
    uint64_t size = uint64_t(source.getSizeInBytes()), bad = 0, first = 0;
    for (uint64_t at = 0; at < size; at += kChunk) {
      uint64_t length = std::min(kChunk, size - at);
      auto chunk = file->read(uint64_t(source.getOffset()) + at, length);
      if (!chunk)
        return source.emitOpError("weight '")
               << source.getName() << "': " << toString(chunk.takeError());
      const char *data = (*chunk)->getBufferStart();
      uint64_t count = length / (bits / 8), base = at / (bits / 8);
      for (uint64_t i = 0; i < count; ++i) {
        uint32_t v = bits == 32 ? support::endian::read32le(data + 4 * i)
                                : support::endian::read16le(data + 2 * i);
        if ((v & mask) == mask && !bad++)
          first = base + i;
      }
      done += length;
      progress(done, total);
    }
    if (!bad)
      continue;
    ok = false;
    if (++reported > 10)
      continue;
    int64_t cols = type.getRank() > 1 ? type.getDimSize(1) : 1;
    std::string at =
        type.getRank() > 1
            ? formatv("[{0}, {1}]", first / cols, first % cols).str()
            : formatv("[{0}]", first).str();
    source.emitOpError("weight '")
        << source.getName() << "' in " << path << " has " << bad
        << " non-finite value" << (bad == 1 ? "" : "s") << " (NaN or "
        << "infinity; the first at " << at << ")";
  }
  if (reported > 10)
    module.emitError() << (reported - 10)
                       << " more weights hold non-finite values";
  return success(ok);
}

} // namespace mlir::moe::hf
