//===- SafeTensors.cpp - safetensors header and index parsing ---*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "frontends/hf/SafeTensors.h"

#include "frontends/InputFiles.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>

using namespace llvm;

namespace mlir::moe::hf {

namespace {
struct DTypeInfo {
  STDType type;
  const char *name;
  unsigned bytes;
};
constexpr DTypeInfo kDTypes[] = {
    {STDType::BOOL, "BOOL", 1},       {STDType::U8, "U8", 1},
    {STDType::I8, "I8", 1},           {STDType::F8_E5M2, "F8_E5M2", 1},
    {STDType::F8_E4M3, "F8_E4M3", 1}, {STDType::I16, "I16", 2},
    {STDType::U16, "U16", 2},         {STDType::F16, "F16", 2},
    {STDType::BF16, "BF16", 2},       {STDType::I32, "I32", 4},
    {STDType::U32, "U32", 4},         {STDType::F32, "F32", 4},
    {STDType::F64, "F64", 8},         {STDType::I64, "I64", 8},
    {STDType::U64, "U64", 8},
};

Error error(StringRef file, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), file + ": " + message);
}

/// Parses one tensor entry of the header.
Expected<TensorInfo> parseEntry(StringRef file, StringRef name,
                                const json::Value &value, uint64_t dataSize) {
  const json::Object *entry = value.getAsObject();
  if (!entry)
    return error(file, "tensor '" + name + "': entry is not a JSON object");
  for (const auto &kv : *entry)
    if (kv.first != "dtype" && kv.first != "shape" &&
        kv.first != "data_offsets")
      return error(file, "tensor '" + name + "': unexpected key '" +
                             kv.first.str() + "'");
  TensorInfo info;
  info.name = name.str();

  std::optional<StringRef> dtype = entry->getString("dtype");
  if (!dtype)
    return error(file, "tensor '" + name + "': 'dtype' must be a string");
  const DTypeInfo *dt = llvm::find_if(
      kDTypes, [&](const DTypeInfo &d) { return *dtype == d.name; });
  if (dt == std::end(kDTypes))
    return error(file, "tensor '" + name + "': unknown dtype '" + *dtype + "'");
  info.dtype = dt->type;

  const json::Array *shape = entry->getArray("shape");
  if (!shape)
    return error(file, "tensor '" + name + "': 'shape' must be an array");
  for (const json::Value &d : *shape) {
    std::optional<int64_t> dim = d.getAsInteger();
    if (!dim || *dim < 0)
      return error(file, "tensor '" + name +
                             "': shape entries must be non-negative integers");
    info.shape.push_back(*dim);
  }
  // Element count, checked against overflow and against the data section.
  uint64_t elements = 1;
  for (int64_t dim : info.shape) {
    if (dim != 0 &&
        elements > std::numeric_limits<uint64_t>::max() / uint64_t(dim))
      return error(file, "tensor '" + name + "': shape " +
                             formatShape(info.shape) + " overflows");
    elements *= uint64_t(dim);
  }

  const json::Array *offsets = entry->getArray("data_offsets");
  if (!offsets || offsets->size() != 2)
    return error(file, "tensor '" + name +
                           "': 'data_offsets' must be an array [begin, end]");
  std::optional<uint64_t> begin = (*offsets)[0].getAsUINT64();
  std::optional<uint64_t> end = (*offsets)[1].getAsUINT64();
  if (!begin || !end)
    return error(file, "tensor '" + name +
                           "': data offsets must be non-negative integers");
  if (*begin > *end)
    return error(file, formatv("tensor '{0}': data offsets [{1}, {2}) are "
                               "reversed",
                               name, *begin, *end));
  if (*end > dataSize)
    return error(file, formatv("tensor '{0}': data offsets [{1}, {2}) run "
                               "past the end of the data section ({3} bytes)",
                               name, *begin, *end, dataSize));
  info.begin = *begin;
  info.end = *end;
  // elements * bytes cannot overflow here unless it exceeds dataSize, which
  // the comparison catches first.
  uint64_t held = *end - *begin;
  if (elements > held || elements * dt->bytes != held)
    return error(file,
                 formatv("tensor '{0}': {1} {2} needs {3} bytes but its "
                         "data offsets [{4}, {5}) hold {6}",
                         name, dt->name, formatShape(info.shape),
                         elements > held ? "more than " + std::to_string(held)
                                         : std::to_string(elements * dt->bytes),
                         *begin, *end, held));
  return info;
}
} // namespace

std::string formatShape(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [i, d] : llvm::enumerate(shape))
    s += (i ? ", " : "") + std::to_string(d);
  return s + "]";
}

StringRef stringifySTDType(STDType type) {
  for (const DTypeInfo &d : kDTypes)
    if (d.type == type)
      return d.name;
  llvm_unreachable("unknown STDType");
}

unsigned bytesPerElement(STDType type) {
  for (const DTypeInfo &d : kDTypes)
    if (d.type == type)
      return d.bytes;
  llvm_unreachable("unknown STDType");
}

Expected<SafeTensorsHeader>
parseSafeTensorsHeader(StringRef file, StringRef text, uint64_t fileSize) {
  if (fileSize < 8 || text.size() > fileSize - 8)
    return error(file, "header does not fit in the file");
  SafeTensorsHeader header;
  header.dataOffset = 8 + text.size();
  header.dataSize = fileSize - header.dataOffset;

  Expected<json::Value> parsed = parseJSON(file, text);
  if (!parsed)
    return parsed.takeError();
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return error(file, "header is not a JSON object");

  // Visit entries by name so that messages do not depend on hash order.
  std::vector<const json::Object::value_type *> entries;
  for (const auto &kv : *root)
    entries.push_back(&kv);
  llvm::sort(entries, [](auto *a, auto *b) { return a->first < b->first; });
  for (const json::Object::value_type *kvp : entries) {
    const auto &kv = *kvp;
    StringRef name = kv.first;
    if (name == "__metadata__") {
      const json::Object *meta = kv.second.getAsObject();
      if (!meta)
        return error(file, "'__metadata__' must be an object of strings");
      for (const auto &m : *meta)
        if (!m.second.getAsString())
          return error(file, "'__metadata__' value for '" + m.first.str() +
                                 "' must be a string");
      continue;
    }
    if (name.empty())
      return error(file, "a tensor has an empty name");
    if (name.contains('\0'))
      return error(file, "a tensor name contains a NUL byte");
    Expected<TensorInfo> info =
        parseEntry(file, name, kv.second, header.dataSize);
    if (!info)
      return info.takeError();
    header.tensors.push_back(std::move(*info));
  }

  // Deterministic order (file order), then no two tensors may share bytes.
  llvm::sort(header.tensors, [](const TensorInfo &a, const TensorInfo &b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const TensorInfo *previous = nullptr;
  for (const TensorInfo &t : header.tensors) {
    if (t.begin == t.end)
      continue;
    if (previous && t.begin < previous->end)
      return error(file, formatv("tensors '{0}' [{1}, {2}) and '{3}' [{4}, "
                                 "{5}) overlap",
                                 previous->name, previous->begin, previous->end,
                                 t.name, t.begin, t.end));
    previous = &t;
  }
  for (auto [i, t] : llvm::enumerate(header.tensors))
    header.byName[t.name] = i;
  return header;
}

Expected<SafeTensorsHeader> parseSafeTensorsImage(StringRef file,
                                                  StringRef image) {
  if (image.size() < 8)
    return error(file, formatv("file is {0} bytes, too short for the 8-byte "
                               "header length",
                               image.size()));
  uint64_t length = support::endian::read64le(image.data());
  if (length > image.size() - 8)
    return error(file, formatv("header length {0} runs past the end of the "
                               "file ({1} bytes)",
                               length, image.size()));
  if (length > kMaxHeaderBytes)
    return error(file, formatv("header length {0} exceeds the {1}-byte limit",
                               length, kMaxHeaderBytes));
  return parseSafeTensorsHeader(file, image.substr(8, length), image.size());
}

Expected<SafeTensorsHeader> readSafeTensorsHeader(StringRef path) {
  Expected<InputFile> file = InputFile::open(path);
  if (!file)
    return file.takeError();
  uint64_t fileSize = file->size();
  if (fileSize < 8)
    return error(path, formatv("file is {0} bytes, too short for the 8-byte "
                               "header length",
                               fileSize));
  auto prefix = file->read(0, 8);
  if (!prefix)
    return prefix.takeError();
  uint64_t length = support::endian::read64le((*prefix)->getBufferStart());
  if (length > fileSize - 8)
    return error(path, formatv("header length {0} runs past the end of the "
                               "file ({1} bytes)",
                               length, fileSize));
  if (length > kMaxHeaderBytes)
    return error(path, formatv("header length {0} exceeds the {1}-byte limit",
                               length, kMaxHeaderBytes));
  auto text = file->read(8, length);
  if (!text)
    return text.takeError();
  return parseSafeTensorsHeader(path, (*text)->getBuffer(), fileSize);
}

Expected<StringMap<std::string>> parseSafeTensorsIndex(StringRef file,
                                                       StringRef text) {
  Expected<json::Value> parsed = parseJSON(file, text);
  if (!parsed)
    return parsed.takeError();
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return error(file, "not a JSON object");
  const json::Object *map = root->getObject("weight_map");
  if (!map)
    return error(file, "'weight_map' must be an object");
  StringMap<std::string> result;
  for (const auto &kv : *map) {
    std::optional<StringRef> shard = kv.second.getAsString();
    if (!shard)
      return error(file, "weight_map entry for '" + kv.first.str() +
                             "' must be a string");
    if (shard->empty() || shard->contains('/') || shard->contains('\\') ||
        shard->contains('\0') || *shard == "." || *shard == "..")
      return error(file, "weight_map entry for '" + kv.first.str() +
                             "' names '" + *shard +
                             "', which is not a plain file name");
    result[kv.first] = shard->str();
  }
  if (result.empty())
    return error(file, "'weight_map' is empty");
  return result;
}

} // namespace mlir::moe::hf
