//===- ONNXModel.cpp - raise an ONNX graph into a ModelSpec ----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// The graph shape raised (docs/frontends.md, "ONNX"), ONNX Runtime GenAI's
// for Mixtral, batch dimension free:
//
//   h = Gather(embedding [V, H], input_ids)
//   per layer:
//     a = RMSNorm(h)                     SimplifiedLayerNormalization or
//                                        RMSNormalization, axis -1
//     q, k, v = linear(a)                MatMul(a, W [in, out]), or
//                                        MatMul(a, Transpose(W [out, in]))
//                                        or Gemm(a, W, transB = 0 or 1)
//     o = GroupQueryAttention(q, k, v, past..., cos_cache, sin_cache)
//                                        com.microsoft, do_rotary = 1; or
//                                        do_rotary = 0 with q and k each
//                                        through a RotaryEmbedding
//     h = Add(h, linear(o))
//     x = RMSNorm(h)
//     r = linear(x or Reshape(x, [-1, H]))          the router logits
//     h = Add(h, MoE(x, r, fc1, fc2[, fc3]))        com.microsoft
//                    swiglu_fusion 0 (fc3), 1 (gate/up rows interleaved)
//                    or 2 (gate rows, then up rows)
//   logits = linear(RMSNorm(h))
//
// Every node must be part of that pattern: a node left over is an error
// naming it, never a silent fallback.
//
// A graph whose embedding feeds a Pow (a decomposed RMS norm) is
// torch.onnx.export's decomposed graph instead, raised by
// ONNXDecomposed.cpp into the same ModelSpec.
//
// Weights are mapped in place when stored as the dialect takes them
// ([out, in], an expert's rows contiguous). A weight stored [in, out] (what
// exporters write for MatMul(x, W)) becomes a `transposed` source, and an
// expert's interleaved gate or up rows a `rows S step 2 of` source:
// moe-compile re-lays those out once into the artifact's weights file.
//
//===----------------------------------------------------------------------===//

#include "frontends/onnx/ONNXModel.h"

#include "frontends/InputFiles.h"
#include "frontends/ModelSpec.h"
#include "frontends/onnx/ONNXProto.h"
#include "frontends/onnx/ONNXRaise.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <climits>
#include <cmath>
#include <map>

using namespace llvm;

namespace mlir::moe::onnxfe {

namespace raising {

/// IR versions read: 7 (opset 13's) to 11 (onnx 1.19's).
constexpr int64_t kMinIRVersion = 7, kMaxIRVersion = 11;
/// Default-domain opsets whose ops used here mean what this file assumes.
constexpr int64_t kMinOpset = 13, kMaxOpset = 23;
/// TensorProto's UINT8 (QMoE's packed values), which wire::TensorProto
/// does not name.
constexpr int32_t kUInt8 = 2;
/// Largest non-weight tensor read into memory (the RoPE caches, shapes).
constexpr uint64_t kMaxValueBytes = uint64_t(256) << 20;

Error error(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

Error error(const formatv_object_base &message) {
  return error(Twine(message.str()));
}

std::string shapeText(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [i, d] : llvm::enumerate(shape))
    s += (i ? ", " : "") + std::to_string(d);
  return s + "]";
}

const char *dataTypeName(int32_t t) {
  static const char *names[] = {
      "UNDEFINED",      "FLOAT",        "UINT8",          "INT8",
      "UINT16",         "INT16",        "INT32",          "INT64",
      "STRING",         "BOOL",         "FLOAT16",        "DOUBLE",
      "UINT32",         "UINT64",       "COMPLEX64",      "COMPLEX128",
      "BFLOAT16",       "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
      "FLOAT8E5M2FNUZ", "UINT4",        "INT4",           "FLOAT4E2M1"};
  return t >= 0 && size_t(t) < std::size(names) ? names[t] : "unknown";
}

Expected<std::unique_ptr<wire::ModelProto>> parseProto(StringRef file,
                                                       StringRef bytes) {
  if (bytes.size() > kMaxModelBytes)
    return error(file + ": is " + Twine(bytes.size()) +
                 " bytes; an .onnx file is at most 2 GB (larger models keep "
                 "their weights in external data files)");
  auto model = std::make_unique<wire::ModelProto>();
  if (Error e = wire::parseModel(bytes, *model))
    return error(file + ": not a valid ONNX model (" + toString(std::move(e)) +
                 ")");
  if (!model->has_graph()) {
    return error(file + ": not an ONNX model: it has no graph");
  }
  int64_t ir = model->ir_version();
  if (ir < kMinIRVersion || ir > kMaxIRVersion) {
    return error(formatv("{0}: IR version {1} is not supported (moe-compile "
                         "reads IR versions {2} to {3})",
                         file, ir, kMinIRVersion, kMaxIRVersion));
  }
  bool sawDefault = false;
  for (const wire::OperatorSetIdProto &op : model->opset_import()) {
    StringRef domain = op.domain();
    if (domain.empty() || domain == "ai.onnx") {
      sawDefault = true;
      if (op.version() < kMinOpset || op.version() > kMaxOpset) {
        return error(formatv("{0}: opset {1} of the default domain is not "
                             "supported (moe-compile reads opsets {2} to {3})",
                             file, op.version(), kMinOpset, kMaxOpset));
      }
    } else if (domain == "com.microsoft") {
      if (op.version() != 1) {
        return error(formatv("{0}: opset {1} of domain com.microsoft is not "
                             "supported (moe-compile reads version 1)",
                             file, op.version()));
      }
    } else {
      return error(file + ": operator set domain '" + printableText(domain) +
                   "' is not supported (moe-compile reads the default domain "
                   "and com.microsoft)");
    }
  }
  if (!sawDefault) {
    return error(file + ": the model imports no opset of the default domain");
  }
  return model;
}

/// The float storage types of weights.
std::optional<WeightDType> weightDType(int32_t t) {
  switch (t) {
  case wire::TensorProto::FLOAT:
    return WeightDType::F32;
  case wire::TensorProto::FLOAT16:
    return WeightDType::F16;
  case wire::TensorProto::BFLOAT16:
    return WeightDType::BF16;
  default:
    return std::nullopt;
  }
}

/// A decimal string of at most 19 digits (no sign, no spaces).
std::optional<uint64_t> parseDecimal(StringRef s) {
  if (s.empty() || s.size() > 19 ||
      !llvm::all_of(s, [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  uint64_t v = 0;
  for (char c : s)
    v = v * 10 + uint64_t(c - '0');
  return v;
}

/// The float32 `f` as the shortest decimal that reads back as `f` (an
/// epsilon of 1e-5 stored as float32 is 1e-5 again).
double shortestDecimal(float f) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, double(f));
    if (float(std::strtod(text, nullptr)) == f)
      return std::strtod(text, nullptr);
  }
  return double(f);
}

std::string Importer::nodeName(const wire::NodeProto &n) const {
  std::string op = n.domain().empty() || n.domain() == "ai.onnx"
                       ? n.op_type()
                       : n.domain() + "." + n.op_type();
  return "node '" + printableText(n.name()) + "' (" + printableText(op) + ")";
}

Error Importer::nodeError(const wire::NodeProto &n,
                          const Twine &message) const {
  return error(path + ": " + nodeName(n) + ": " + message);
}

Expected<int64_t> Importer::intAttr(const wire::NodeProto &n, StringRef name,
                                    std::optional<int64_t> dflt) const {
  const wire::AttributeProto *a = attr(n, name);
  if (!a) {
    if (dflt)
      return *dflt;
    return nodeError(n, "attribute '" + name + "' is missing");
  }
  if (a->type() != wire::AttributeProto::INT)
    return nodeError(n, "attribute '" + name + "' must be an integer");
  return a->i();
}

Expected<float> Importer::floatAttr(const wire::NodeProto &n, StringRef name,
                                    std::optional<float> dflt) const {
  const wire::AttributeProto *a = attr(n, name);
  if (!a) {
    if (dflt)
      return *dflt;
    return nodeError(n, "attribute '" + name + "' is missing");
  }
  if (a->type() != wire::AttributeProto::FLOAT)
    return nodeError(n, "attribute '" + name + "' must be a float");
  return a->f();
}

Expected<std::string>
Importer::stringAttr(const wire::NodeProto &n, StringRef name,
                     std::optional<StringRef> dflt) const {
  const wire::AttributeProto *a = attr(n, name);
  if (!a) {
    if (dflt)
      return dflt->str();
    return nodeError(n, "attribute '" + name + "' is missing");
  }
  if (a->type() != wire::AttributeProto::STRING)
    return nodeError(n, "attribute '" + name + "' must be a string");
  return a->s();
}

const wire::TensorProto *Importer::constant(StringRef value) const {
  if (const wire::TensorProto *t = initializer(value))
    return t;
  auto it = constants.find(value);
  return it == constants.end() ? nullptr : it->second;
}

Expected<uint64_t> Importer::dataFileSize(StringRef location,
                                          StringRef tensor) {
  auto it = dataFiles.find(location);
  if (it != dataFiles.end())
    return it->second;
  auto fail = [&](const Twine &why) {
    return error(path + ": tensor '" + printableText(tensor) +
                 "': external data location '" + printableText(location) +
                 "' " + why);
  };
  if (location.empty())
    return fail("is empty");
  if (location.contains('\0') || location.contains('\\'))
    return fail("has a NUL or backslash");
  if (sys::path::is_absolute(location) || location.starts_with("/"))
    return fail("is an absolute path; it must be relative to the model's "
                "directory");
  SmallVector<StringRef> parts;
  location.split(parts, '/');
  for (StringRef part : parts)
    if (part == "..")
      return fail("leaves the model's directory ('..')");
  SmallString<256> joined(dir), real;
  sys::path::append(joined, location);
  if (std::error_code ec = sys::fs::real_path(joined, real))
    return fail(ec == std::errc::no_such_file_or_directory
                    ? Twine("names no file in ") + dir
                    : Twine("cannot be accessed: ") + ec.message());
  std::string prefix = (dir + "/").str();
  if (!StringRef(real).starts_with(prefix))
    return fail("resolves to " + real +
                ", outside the model's directory (a symbolic link out)");
  Expected<InputFile> file = InputFile::open(real);
  if (!file)
    return fail(toString(file.takeError()));
  dataFiles[location] = file->size();
  return file->size();
}

Expected<WeightSource> Importer::weightSource(const wire::TensorProto &t,
                                              bool uint8) {
  std::string name = printableText(t.name());
  std::optional<WeightDType> dtype = weightDType(t.data_type());
  // Bytes: sized as one-byte elements here (the caller retypes them).
  bool isBytes = uint8 && t.data_type() == kUInt8;
  if (isBytes)
    dtype = WeightDType::Q8_0;
  if (!dtype)
    return error(path + ": tensor '" + name + "' has element type " +
                 dataTypeName(t.data_type()) +
                 "; weights must be FLOAT, FLOAT16 or BFLOAT16");
  WeightSource w;
  w.dtype = *dtype;
  uint64_t elements = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || d > (int64_t(1) << 40))
      return error(path + ": tensor '" + name + "' has dimension " + Twine(d) +
                   " out of range");
    if (d && elements > (uint64_t(1) << 50) / uint64_t(d))
      return error(path + ": tensor '" + name + "' has too many elements");
    elements *= uint64_t(d);
    w.shape.push_back(d);
  }
  uint64_t bytes =
      elements * (isBytes ? uint64_t(1) : uint64_t(bytesPerElement(*dtype)));
  if (t.data_location() != wire::TensorProto::EXTERNAL)
    return error(
        path + ": tensor '" + name + "' is stored inside the .onnx file (" +
        Twine(bytes) +
        " bytes); moe-compile maps weights in place from external data: save "
        "the model with every initializer in an external data file (onnx: "
        "onnx.save_model(m, path, save_as_external_data=True, "
        "size_threshold=0))");
  std::optional<std::string> location;
  std::optional<uint64_t> offset, length;
  for (const wire::StringStringEntryProto &kv : t.external_data()) {
    StringRef key = kv.key();
    if ((key == "location" && location) || (key == "offset" && offset) ||
        (key == "length" && length))
      return error(path + ": tensor '" + name + "': external data key '" + key +
                   "' is given twice");
    if (key == "location") {
      location = kv.value();
    } else if (key == "offset" || key == "length") {
      std::optional<uint64_t> v = parseDecimal(kv.value());
      if (!v)
        return error(path + ": tensor '" + name + "': external data '" + key +
                     "' is '" + printableText(kv.value()) +
                     "', not a non-negative integer");
      (key == "offset" ? offset : length) = v;
    } else if (key != "checksum") {
      return error(path + ": tensor '" + name +
                   "': unknown external data key '" + printableText(key) + "'");
    }
  }
  if (!location)
    return error(path + ": tensor '" + name +
                 "' is external data without a 'location'");
  Expected<uint64_t> size = dataFileSize(*location, t.name());
  if (!size)
    return size.takeError();
  if (length && *length != bytes)
    return error(formatv("{0}: tensor '{1}': external data length {2} is not "
                         "the {3} bytes of its shape {4} in {5}",
                         path, name, *length, bytes, shapeText(w.shape),
                         dataTypeName(t.data_type())));
  uint64_t start = offset.value_or(0);
  if (start > *size || bytes > *size - start)
    return error(formatv("{0}: tensor '{1}': bytes [{2}, {3}) are beyond the "
                         "end of {4} ({5} bytes)",
                         path, name, start, start + bytes,
                         printableText(*location), *size));
  w.file = *location;
  w.offset = start;
  w.size = bytes;
  return w;
}

Expected<std::vector<float>> Importer::floatValues(const wire::TensorProto &t) {
  std::string name = printableText(t.name());
  if (t.data_type() != wire::TensorProto::FLOAT)
    return error(path + ": tensor '" + name + "' must be FLOAT, not " +
                 dataTypeName(t.data_type()));
  uint64_t elements = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || (d && elements > kMaxValueBytes / 4 / uint64_t(d)))
      return error(path + ": tensor '" + name + "' is too large to read");
    elements *= uint64_t(d);
  }
  std::vector<float> values(elements);
  if (t.data_location() == wire::TensorProto::EXTERNAL) {
    Expected<WeightSource> w = weightSource(t);
    if (!w)
      return w.takeError();
    SmallString<256> file(dir);
    sys::path::append(file, w->file);
    Expected<InputFile> in = InputFile::open(file);
    if (!in)
      return in.takeError();
    auto data = in->read(w->offset, w->size);
    if (!data)
      return data.takeError();
    std::memcpy(values.data(), (*data)->getBufferStart(), w->size);
  } else if (t.has_raw_data()) {
    if (t.raw_data().size() != elements * 4)
      return error(path + ": tensor '" + name + "' has " +
                   Twine(t.raw_data().size()) + " bytes of raw data for " +
                   Twine(elements) + " floats");
    std::memcpy(values.data(), t.raw_data().data(), elements * 4);
  } else {
    if (uint64_t(t.float_data_size()) != elements)
      return error(path + ": tensor '" + name + "' has " +
                   Twine(t.float_data_size()) + " values for " +
                   Twine(elements) + " elements");
    std::copy(t.float_data().begin(), t.float_data().end(), values.begin());
  }
  return values;
}

Error Importer::checkZeroBias(const wire::NodeProto &n, int in, StringRef role,
                              ArrayRef<int64_t> shape) {
  std::string name = input(n, in).str();
  auto fail = [&](const Twine &why) {
    return nodeError(n, "the " + role + " bias '" + printableText(name) +
                            "' (input " + Twine(in) + ") " + why +
                            ": expert biases are not supported (zero ones, "
                            "as ONNX Runtime GenAI's builder writes, are "
                            "read and dropped)");
  };
  const wire::TensorProto *t = initializer(name);
  if (!t)
    return fail("is not an initializer");
  if (ArrayRef<int64_t>(t->dims()) != shape)
    return fail("has shape " + shapeText(t->dims()) + ", expected " +
                shapeText(shape));
  std::optional<WeightDType> dtype = weightDType(t->data_type());
  if (!dtype)
    return fail(Twine("has element type ") + dataTypeName(t->data_type()));
  uint64_t width = uint64_t(bytesPerElement(*dtype));
  std::unique_ptr<MemoryBuffer> read;
  StringRef bytes;
  std::vector<float> typed;
  if (t->data_location() == wire::TensorProto::EXTERNAL) {
    Expected<WeightSource> w = weightSource(*t);
    if (!w)
      return w.takeError();
    if (w->size > kMaxValueBytes)
      return fail("is too large to read");
    SmallString<256> file(dir);
    sys::path::append(file, w->file);
    Expected<InputFile> f = InputFile::open(file);
    if (!f)
      return f.takeError();
    auto data = f->read(w->offset, w->size);
    if (!data)
      return data.takeError();
    read = std::move(*data);
    bytes = read->getBuffer();
  } else if (t->has_raw_data()) {
    bytes = t->raw_data();
  } else if (t->data_type() == wire::TensorProto::FLOAT) {
    typed.assign(t->float_data().begin(), t->float_data().end());
    bytes = StringRef(reinterpret_cast<const char *>(typed.data()),
                      typed.size() * 4);
  } else {
    return fail("holds its values in a field moe-compile does not read");
  }
  uint64_t elements = 1;
  for (int64_t d : shape)
    elements *= uint64_t(d);
  if (bytes.size() != elements * width)
    return fail("has " + Twine(bytes.size()) + " bytes for " + Twine(elements) +
                " values");
  // +0 or -0: every bit but the sign (the top bit of the last,
  // little-endian, byte) clear.
  for (uint64_t i = 0; i < elements; ++i) {
    const char *v = bytes.data() + i * width;
    for (uint64_t b = 0; b < width; ++b)
      if (uint8_t(v[b]) & (b + 1 == width ? 0x7f : 0xff))
        return fail("is not zero (its value " + Twine(i) + ", [" +
                    Twine(i / uint64_t(shape.back())) + ", " +
                    Twine(i % uint64_t(shape.back())) + "])");
  }
  return Error::success();
}

Expected<std::vector<int64_t>> Importer::intValues(const wire::TensorProto &t) {
  std::string name = printableText(t.name());
  if (t.data_type() != wire::TensorProto::INT64 ||
      t.data_location() == wire::TensorProto::EXTERNAL || t.dims_size() > 1)
    return error(path + ": tensor '" + name +
                 "' must be an inline INT64 vector");
  std::vector<int64_t> values;
  if (t.has_raw_data()) {
    if (t.raw_data().size() % 8 || t.raw_data().size() > 64)
      return error(path + ": tensor '" + name + "' has a bad raw_data size");
    values.resize(t.raw_data().size() / 8);
    std::memcpy(values.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    values.assign(t.int64_data().begin(), t.int64_data().end());
  }
  int64_t n = t.dims_size() ? t.dims(0) : 1;
  if (int64_t(values.size()) != n)
    return error(path + ": tensor '" + name + "' has " + Twine(values.size()) +
                 " values for " + Twine(n) + " elements");
  return values;
}

Error Importer::addWeight(const std::string &key, StringRef initializerName,
                          ArrayRef<int64_t> shape, const wire::NodeProto &by,
                          StringRef role, bool transposed) {
  const wire::TensorProto *t = initializer(initializerName);
  if (!t)
    return nodeError(by, "the " + role + " weight '" +
                             printableText(initializerName) +
                             "' is not an initializer");
  Expected<WeightSource> w = weightSource(*t);
  if (!w)
    return w.takeError();
  SmallVector<int64_t, 2> stored(shape.begin(), shape.end());
  if (transposed)
    std::reverse(stored.begin(), stored.end());
  if (ArrayRef<int64_t>(w->shape) != ArrayRef<int64_t>(stored)) {
    std::string hint;
    if (transposed && initializerName == embedding)
      hint = " (MatMul(x, E) multiplies by the embedding table E [vocab, "
             "hidden] untransposed; a tied lm_head is MatMul(x, "
             "Transpose(E)) or Gemm(x, E, transB = 1))";
    return nodeError(
        by, "the " + role + " weight '" + printableText(initializerName) +
                "' has shape " + shapeText(w->shape) + ", expected " +
                shapeText(stored) +
                (transposed ? " ([in, out], MatMul's B)" : " ([out, in])") +
                hint);
  }
  if (transposed) {
    w->shape.assign(shape.begin(), shape.end());
    w->transposed = true;
  }
  weights[key] = *w;
  return Error::success();
}

Error Importer::addQMoEWeight(StringRef name, StringRef scalesName,
                              ArrayRef<int64_t> shape, int64_t bits,
                              int64_t blockSize, const wire::NodeProto &by,
                              StringRef role) {
  const wire::TensorProto *t = initializer(name), *st = initializer(scalesName);
  if (!t || !st)
    return nodeError(by, "the " + role + " weight '" + printableText(name) +
                             "' and its scales '" + printableText(scalesName) +
                             "' must be initializers");
  int64_t E = shape[0], N = shape[1], K = shape[2];
  SmallVector<int64_t, 3> packed = {E, N, K * bits / 8};
  SmallVector<int64_t, 3> scaleShape = {E, N};
  if (blockSize)
    scaleShape.push_back(K / blockSize);
  if (t->data_type() != kUInt8 ||
      ArrayRef<int64_t>(t->dims()) != ArrayRef<int64_t>(packed))
    return nodeError(by, "the " + role + " weight '" + printableText(name) +
                             "' must be UINT8 " + shapeText(packed) + " (" +
                             Twine(bits) + "-bit values)");
  if (ArrayRef<int64_t>(st->dims()) != ArrayRef<int64_t>(scaleShape))
    return nodeError(by, "the " + role + " scales '" +
                             printableText(scalesName) + "' must be " +
                             shapeText(scaleShape));
  // The scales are floats (weightSource checks them); the values bytes.
  Expected<WeightSource> scales = weightSource(*st);
  if (!scales)
    return scales.takeError();
  Expected<WeightSource> w = weightSource(*t, /*uint8=*/true);
  if (!w)
    return w.takeError();
  w->dtype = bits == 8 ? WeightDType::Q8_0 : WeightDType::Q4_0;
  w->shape.assign(shape.begin(), shape.end());
  w->scalesPerRow = blockSize ? K / blockSize : 1;
  w->scalesOffset = scales->offset;
  w->scalesDType = scales->dtype;
  weights[name] = *w;
  return Error::success();
}

Error Importer::addSlice(const std::string &key, StringRef initializerName,
                         int64_t firstRow, ArrayRef<int64_t> shape,
                         int64_t rowStart, int64_t rowStep, int64_t rowsOf) {
  // The stacked tensor was checked by the caller (addWeight).
  WeightSource w = weights.lookup(initializerName);
  uint64_t cols = uint64_t(shape[1]), rowBytes, scaleRow = 0;
  if (w.scalesPerRow > 0) {
    rowBytes = cols * (w.dtype == WeightDType::Q8_0 ? 8 : 4) / 8;
    scaleRow =
        uint64_t(w.scalesPerRow) * uint64_t(bytesPerElement(w.scalesDType));
  } else {
    rowBytes = cols * uint64_t(bytesPerElement(w.dtype));
  }
  uint64_t rows = uint64_t(rowStep > 0 ? rowsOf : shape[0]);
  w.offset += uint64_t(firstRow) * rowBytes;
  w.scalesOffset += uint64_t(firstRow) * scaleRow;
  w.size = rows * rowBytes;
  w.shape.assign(shape.begin(), shape.end());
  w.rowStart = rowStart;
  w.rowStep = rowStep;
  w.rowsOf = rowsOf;
  weights[key] = w;
  return Error::success();
}

Expected<Importer::Linear> Importer::matchLinear(StringRef value,
                                                 StringRef what) {
  const wire::NodeProto *n = producer(value);
  if (!n)
    return error(path + ": the " + what + " ('" + printableText(value) +
                 "') is not computed by a node");
  if (is(*n, "Gemm")) {
    Expected<int64_t> transA = intAttr(*n, "transA", 0),
                      transB = intAttr(*n, "transB", 0);
    Expected<float> alpha = floatAttr(*n, "alpha", 1.0f),
                    beta = floatAttr(*n, "beta", 1.0f);
    if (Error e = firstErrors(transA, transB, alpha, beta))
      return std::move(e);
    if (*transA || (*transB != 0 && *transB != 1) || *alpha != 1.0f ||
        !input(*n, 2).empty())
      return nodeError(*n, "the " + what +
                               " must be a Gemm with transA = 0, transB = 0 "
                               "(weight [in, out]) or 1 (weight [out, in]), "
                               "alpha = 1 and no C");
    raise(*n);
    return Linear{input(*n, 0).str(), input(*n, 1).str(), *transB == 0};
  }
  if (!is(*n, "MatMul"))
    return nodeError(*n, "the " + what +
                             " must be a MatMul of a weight (or of a "
                             "transposed one) or a Gemm");
  StringRef b = input(*n, 1);
  // MatMul(x, W): W is stored [in, out], re-laid out at compile time.
  if (initializer(b)) {
    raise(*n);
    return Linear{input(*n, 0).str(), b.str(), /*transposed=*/true};
  }
  const wire::NodeProto *t = producer(b);
  if (!t || !is(*t, "Transpose") || !initializer(input(*t, 0)))
    return nodeError(*n, "the " + what +
                             "'s B must be an initializer W [in, out] or "
                             "Transpose(W) of one [out, in]");
  const wire::AttributeProto *perm = attr(*t, "perm");
  if (perm &&
      (perm->type() != wire::AttributeProto::INTS || perm->ints_size() != 2 ||
       perm->ints(0) != 1 || perm->ints(1) != 0))
    return nodeError(*t, "perm must be [1, 0]");
  raise(*n);
  raise(*t);
  return Linear{input(*n, 0).str(), input(*t, 0).str()};
}

Expected<Importer::Norm> Importer::matchNorm(StringRef value, StringRef what) {
  const wire::NodeProto *found = nullptr;
  for (const wire::NodeProto *c : consumers(value)) {
    if (!is(*c, "SimplifiedLayerNormalization") &&
        !is(*c, "SimplifiedLayerNormalization", "com.microsoft") &&
        !is(*c, "RMSNormalization"))
      continue;
    if (found)
      return nodeError(*c,
                       "a second RMS norm of '" + printableText(value) + "'");
    found = c;
  }
  if (!found) {
    // torch.onnx.export writes the norm as Pow, ReduceMean, Add, Sqrt, ...
    for (const wire::NodeProto *c : consumers(value))
      if (is(*c, "Pow") || is(*c, "ReduceMean") || is(*c, "Mul"))
        return nodeError(*c, "a decomposed RMS norm (the " + what +
                                 "'s) in a graph whose first norm is fused: "
                                 "moe-compile raises ONNX Runtime GenAI's "
                                 "fused graph or torch.onnx.export's "
                                 "decomposed one, not a mix (docs/"
                                 "frontends.md)");
    return error(path +
                 ": no RMS norm (SimplifiedLayerNormalization or "
                 "RMSNormalization) of '" +
                 printableText(value) + "' for the " + what);
  }
  const wire::NodeProto &n = *found;
  if (input(n, 0) != value || n.input_size() != 2)
    return nodeError(n, "expected inputs (x, scale)");
  for (int i = 1; i < n.output_size(); ++i)
    if (!n.output(i).empty() && !consumers(n.output(i)).empty())
      return nodeError(n, "only its first output may be used");
  Expected<int64_t> axis = intAttr(n, "axis", -1);
  Expected<float> epsilon = floatAttr(n, "epsilon", 1e-5f);
  if (Error e = firstErrors(axis, epsilon))
    return std::move(e);
  if (*axis != -1 && *axis != 2)
    return nodeError(n, "axis must be the last (-1), got " + Twine(*axis));
  double e = shortestDecimal(*epsilon);
  if (!(e > 0))
    return nodeError(n, "epsilon must be positive");
  if (eps && *eps != e)
    return nodeError(n, "epsilon " + formatNumber(e) +
                            " differs from the other norms' " +
                            formatNumber(*eps) +
                            " (moe-compile takes one epsilon per model)");
  eps = e;
  raise(n);
  return Norm{value.str(), n.output(0), input(n, 1).str(), &n};
}

Expected<std::string> Importer::matchAdd(StringRef a, StringRef b,
                                         StringRef what) {
  for (const wire::NodeProto *c : consumers(b))
    if (is(*c, "Add") && c->input_size() == 2 &&
        ((input(*c, 0) == a && input(*c, 1) == b) ||
         (input(*c, 0) == b && input(*c, 1) == a))) {
      raise(*c);
      return c->output(0);
    }
  return error(path + ": no residual Add of '" + printableText(a) + "' and '" +
               printableText(b) + "' (" + what + ")");
}

Error Importer::checkRope(const wire::NodeProto &gqa, StringRef cosName,
                          StringRef sinName) {
  if (!ropeCos.empty()) {
    if (cosName != ropeCos || sinName != ropeSin)
      return nodeError(gqa, "every layer must use the same cos_cache and "
                            "sin_cache");
    return Error::success();
  }
  const wire::TensorProto *c = initializer(cosName), *s = initializer(sinName);
  if (!c || !s)
    return nodeError(gqa, "cos_cache and sin_cache must be initializers");
  int64_t half = spec.headDim / 2;
  if (c->dims_size() != 2 || s->dims_size() != 2 || c->dims(1) != half ||
      s->dims(1) != half || c->dims(0) != s->dims(0) || c->dims(0) < 2)
    return nodeError(gqa, "cos_cache and sin_cache must be [max_positions, " +
                              Twine(half) + "] with max_positions >= 2");
  Expected<std::vector<float>> cosv = floatValues(*c);
  if (!cosv)
    return cosv.takeError();
  Expected<std::vector<float>> sinv = floatValues(*s);
  if (!sinv)
    return sinv.takeError();
  int64_t positions = c->dims(0), d = spec.headDim;
  // Position 1, pair 1: sin(theta^(-2/d)); then theta rounded to an integer
  // when that reproduces it, and the whole table checked with it.
  double theta = 10000.0;
  if (half >= 2) {
    double inv = std::asin(double((*sinv)[half + 1]));
    theta = std::pow(inv, -double(d) / 2.0);
    double rounded = std::round(theta);
    if (std::abs(rounded - theta) <= 1e-4 * theta)
      theta = rounded;
  }
  if (!(theta > 1.0) || !std::isfinite(theta))
    return nodeError(gqa, "sin_cache is not a RoPE table (theta " +
                              formatNumber(theta) + ")");
  double worst = 0;
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double angle = double(p) * std::pow(theta, -2.0 * double(i) / double(d));
      worst =
          std::max({worst, std::abs(std::cos(angle) - (*cosv)[p * half + i]),
                    std::abs(std::sin(angle) - (*sinv)[p * half + i])});
    }
  if (worst > 2e-3)
    return nodeError(gqa, "cos_cache/sin_cache are not the default RoPE's "
                          "for theta " +
                              formatNumber(theta) + " (differ by " +
                              formatNumber(worst) +
                              "); scaled RoPE tables are not supported yet");
  spec.ropeTheta = theta;
  spec.maxPositions = positions;
  ropeCos = cosName.str();
  ropeSin = sinName.str();
  return Error::success();
}

Error Importer::matchAttention(const Norm &norm, std::string &out) {
  // The GroupQueryAttention fed by linear layers of the norm's output.
  const wire::NodeProto *gqa = nullptr;
  for (const wire::NodeProto *c : consumers(norm.out))
    if (is(*c, "MatMul") || is(*c, "Gemm"))
      for (const wire::NodeProto *cc : consumers(c->output(0)))
        if (is(*cc, "GroupQueryAttention", "com.microsoft"))
          gqa = cc;
  if (!gqa)
    return nodeError(*norm.node,
                     "its output feeds no com.microsoft.GroupQueryAttention "
                     "through q/k/v projections (decomposed attention is not "
                     "raised yet)");
  const wire::NodeProto &n = *gqa;
  Expected<int64_t> heads = intAttr(n, "num_heads", std::nullopt),
                    kvHeads = intAttr(n, "kv_num_heads", std::nullopt),
                    rotary = intAttr(n, "do_rotary", 0),
                    interleaved = intAttr(n, "rotary_interleaved", 0),
                    window = intAttr(n, "local_window_size", -1),
                    smooth = intAttr(n, "smooth_softmax", 0),
                    qkOut = intAttr(n, "qk_output", 0);
  Expected<float> scale = floatAttr(n, "scale", 0.0f),
                  softcap = floatAttr(n, "softcap", 0.0f);
  if (Error e = firstErrors(heads, kvHeads, rotary, interleaved, window, smooth,
                            qkOut, scale, softcap))
    return e;
  if (*heads < 1 || *kvHeads < 1)
    return nodeError(n, "num_heads and kv_num_heads must be positive");
  if (*rotary != 0 && *rotary != 1)
    return nodeError(n, "do_rotary must be 0 or 1");
  if (*window < -1 || *window >= (int64_t(1) << 31) - 1)
    return nodeError(n, "local_window_size " + Twine(*window) +
                            " is out of range (-1: full attention)");
  if (*smooth || *qkOut || *softcap != 0.0f)
    return nodeError(n, "smooth_softmax, qk_output and softcap must be 0");
  if (*interleaved != 0 && *interleaved != 1)
    return nodeError(n, "rotary_interleaved must be 0 or 1");
  for (int i = 9; i < n.input_size(); ++i)
    if (!input(n, i).empty())
      return nodeError(n, "input " + Twine(i) +
                              " (position_ids, attention_bias, head_sink) is "
                              "not supported");
  if (*rotary == 1 && (input(n, 7).empty() || input(n, 8).empty()))
    return nodeError(n, "with do_rotary = 1 it needs cos_cache and sin_cache "
                        "(inputs 7 and 8)");
  if (*rotary == 0 && (!input(n, 7).empty() || !input(n, 8).empty()))
    return nodeError(n, "with do_rotary = 0 it takes no cos_cache or "
                        "sin_cache");
  // The query and key, before RoPE: with do_rotary = 0, each is rotated by
  // a com.microsoft.RotaryEmbedding(x, position_ids, cos_cache, sin_cache)
  // of its own.
  std::string qIn = input(n, 0).str(), kIn = input(n, 1).str();
  std::string cosName = input(n, 7).str(), sinName = input(n, 8).str();
  int64_t ropeInterleaved = *interleaved, ropeDim = 0;
  if (*rotary == 0) {
    for (int which : {0, 1}) {
      const wire::NodeProto *r = producer(input(n, which));
      if (!r || !is(*r, "RotaryEmbedding", "com.microsoft"))
        return nodeError(n, Twine("with do_rotary = 0 its ") +
                                (which ? "key" : "query") +
                                " must come from a com.microsoft."
                                "RotaryEmbedding (RoPE is not optional)");
      Expected<int64_t> inter = intAttr(*r, "interleaved", 0),
                        dim = intAttr(*r, "rotary_embedding_dim", 0),
                        packed = intAttr(*r, "is_packed_batching", 0);
      Expected<float> rscale = floatAttr(*r, "scale", 1.0f);
      if (Error e = firstErrors(inter, dim, packed, rscale))
        return e;
      if (*packed || *rscale != 1.0f || (*inter != 0 && *inter != 1))
        return nodeError(*r, "is_packed_batching must be 0, scale 1 and "
                             "interleaved 0 or 1");
      const wire::NodeProto *pos = producer(input(*r, 1));
      if (input(*r, 1).empty() || pos || constant(input(*r, 1)))
        return nodeError(*r, "position_ids must be a graph input");
      if (which == 0) {
        ropeInterleaved = *inter;
        ropeDim = *dim;
        cosName = input(*r, 2).str();
        sinName = input(*r, 3).str();
      } else if (*inter != ropeInterleaved || *dim != ropeDim ||
                 input(*r, 2) != cosName || input(*r, 3) != sinName) {
        return nodeError(*r, "the query's and the key's RotaryEmbedding "
                             "must have the same attributes and tables");
      }
      if (consumers(r->output(0)).size() != 1)
        return nodeError(*r, "its output must feed the attention alone");
      raise(*r);
      (which ? kIn : qIn) = input(*r, 0).str();
    }
  }
  for (int i = 3; i <= 6; ++i)
    if (!input(n, i).empty() &&
        (producer(input(n, i)) || constant(input(n, i))))
      return nodeError(n, "input " + Twine(i) +
                              " (past key/value, seqlens_k, "
                              "total_sequence_length) must be a graph input");
  for (int i = 1; i < n.output_size(); ++i)
    if (!consumers(n.output(i)).empty())
      return nodeError(n, "its present key/value outputs may only be graph "
                          "outputs");
  Expected<Linear> q = matchLinear(qIn, "query projection");
  if (!q)
    return q.takeError();
  Expected<Linear> k = matchLinear(kIn, "key projection");
  if (!k)
    return k.takeError();
  Expected<Linear> v = matchLinear(input(n, 2), "value projection");
  if (!v)
    return v.takeError();
  if (q->x != norm.out || k->x != norm.out || v->x != norm.out)
    return nodeError(n, "query, key and value must be projections of the "
                        "same RMS norm's output");
  int64_t l = int64_t(layers.size()) - 1;
  bool first = l == 0;
  const wire::TensorProto *qw = initializer(q->weight);
  int qOut = q->transposed ? 1 : 0; // the dimension of the outputs
  if (!qw || qw->dims_size() != 2 || qw->dims(qOut) % *heads)
    return nodeError(n, q->transposed ? "the query weight must be [hidden, "
                                        "num_heads * head_dim] ([in, out])"
                                      : "the query weight must be [num_heads "
                                        "* head_dim, hidden] ([out, in])");
  int64_t headDim = qw->dims(qOut) / *heads;
  if (first) {
    spec.numHeads = *heads;
    spec.numKvHeads = *kvHeads;
    spec.headDim = headDim;
    spec.ropeInterleaved = ropeInterleaved == 1;
  } else if (spec.numHeads != *heads || spec.numKvHeads != *kvHeads ||
             spec.headDim != headDim ||
             spec.ropeInterleaved != (ropeInterleaved == 1)) {
    return nodeError(n, "num_heads, kv_num_heads, head_dim and "
                        "rotary_interleaved must be the same in every layer");
  }
  if (*scale != 0.0f &&
      std::abs(double(*scale) * std::sqrt(double(headDim)) - 1.0) > 1e-6)
    return nodeError(n, "scale must be 1/sqrt(head_dim) (or absent)");
  if (ropeDim != 0 && ropeDim != headDim)
    return nodeError(n, "partial RoPE (rotary_embedding_dim " + Twine(ropeDim) +
                            " of head_dim " + Twine(headDim) +
                            ") is not supported");
  if (Error e = checkRope(n, cosName, sinName))
    return e;
  // ORT's local_window_size W: a query sees itself and the W keys before
  // it, transformers' sliding_window W + 1 (checked against onnxruntime in
  // cpu-onnx.test).
  windows.push_back(*window < 0 ? std::nullopt
                                : std::optional<int64_t>(*window + 1));
  raise(n);
  Layer &layer = layers.back();
  int64_t H = spec.hiddenSize;
  if (Error e = addLinear(layer.q = q->weight, *q, {spec.numHeads * headDim, H},
                          n, "query"))
    return e;
  if (Error e = addLinear(layer.k = k->weight, *k,
                          {spec.numKvHeads * headDim, H}, n, "key"))
    return e;
  if (Error e = addLinear(layer.v = v->weight, *v,
                          {spec.numKvHeads * headDim, H}, n, "value"))
    return e;
  // The output projection of the attention.
  std::vector<const wire::NodeProto *> users = consumers(n.output(0));
  if (users.size() != 1)
    return nodeError(n, "its output must feed the output projection alone");
  Expected<Linear> o = matchLinear(users[0]->output(0), "output projection");
  if (!o)
    return o.takeError();
  if (Error e = addLinear(layer.o = o->weight, *o, {H, spec.numHeads * headDim},
                          *users[0], "output"))
    return e;
  out = users[0]->output(0);
  return Error::success();
}

Error Importer::matchMoE(const Norm &norm, std::string &out) {
  const wire::NodeProto *moe = nullptr;
  for (const wire::NodeProto *c : consumers(norm.out))
    if (is(*c, "MoE", "com.microsoft") || is(*c, "QMoE", "com.microsoft"))
      moe = c;
  if (!moe)
    return nodeError(*norm.node, "its output feeds no com.microsoft.MoE or "
                                 "QMoE (decomposed experts are not raised "
                                 "yet)");
  const wire::NodeProto &n = *moe;
  // QMoE: each weight followed by its scales, so the inputs from fc1 on
  // are fc1, fc1_scales, fc1_bias, fc2, fc2_scales, fc2_bias, fc3, ...
  const bool quantised = is(n, "QMoE", "com.microsoft");
  const int fc2In = quantised ? 5 : 4, fc3In = quantised ? 8 : 6;
  const int inputs = quantised ? 11 : 8;
  int64_t bits = 0, blockSize = 0;
  if (quantised) {
    // ONNX Runtime's symmetric blocks map exactly onto q8_0 / q4_0 (32
    // values, an f16 scale) when each scale covers whole 32-value blocks:
    // block_size a multiple of 32, or absent (one scale per row).
    Expected<int64_t> b = intAttr(n, "expert_weight_bits", 4),
                      bs = intAttr(n, "block_size", 0);
    if (Error e = firstErrors(b, bs))
      return e;
    if (*b != 8 && *b != 4)
      return nodeError(n, "attribute 'expert_weight_bits' is " + Twine(*b) +
                              ": moe-compile converts 8-bit (q8_0) and 4-bit "
                              "(q4_0) experts");
    if (*bs < 0 || *bs % 32)
      return nodeError(n, "attribute 'block_size' is " + Twine(*bs) +
                              ": a q8_0 / q4_0 block has 32 values and one "
                              "scale, so each scale must cover whole blocks "
                              "(block_size a multiple of 32, or absent)");
    bits = *b;
    blockSize = *bs;
  }
  Expected<int64_t> k = intAttr(n, "k", 1),
                    normalize = intAttr(n, "normalize_routing_weights", 0),
                    fusion = intAttr(n, "swiglu_fusion", 0),
                    sparse = intAttr(n, "use_sparse_mixer", 0);
  Expected<std::string> act = stringAttr(n, "activation_type", "relu");
  if (Error e = firstErrors(k, normalize, fusion, sparse, act))
    return e;
  for (StringRef a : {"activation_alpha", "activation_beta", "swiglu_limit"})
    if (attr(n, a))
      return nodeError(n, "attribute '" + a +
                              "' is not supported (plain SiLU gating only)");
  if (*sparse)
    return nodeError(n, "use_sparse_mixer is not supported");
  if (*normalize != 0 && *normalize != 1)
    return nodeError(n, "normalize_routing_weights must be 0 or 1");
  bool hasFc3 = !input(n, fc3In).empty();
  // fc1 holds gate and up: 1 interleaved (row 2i gate row i, 2i + 1 up row
  // i; re-laid out at compile time), 2 gate rows then up rows (in place).
  bool fused = *fusion == 1 || *fusion == 2;
  if (fused ? (*act != "swiglu" || hasFc3)
            : (*fusion != 0 || *act != "silu" || !hasFc3))
    return nodeError(n, "activation_type '" + printableText(*act) +
                            "' with swiglu_fusion " + Twine(*fusion) +
                            (hasFc3 ? " and fc3" : " and no fc3") +
                            " is not supported: Mixtral's experts are "
                            "swiglu with swiglu_fusion = 1 or 2, or silu "
                            "with swiglu_fusion = 0 and fc3");
  for (int i = inputs; i < n.input_size(); ++i)
    if (!input(n, i).empty())
      return nodeError(n, "input " + Twine(i) + " is not supported");
  if (input(n, 0) != norm.out)
    return nodeError(n, "its input must be the RMS norm's output");
  // The router logits: a linear layer of the norm's output, or of it
  // reshaped to [-1, H] rows.
  Expected<Linear> router = matchLinear(input(n, 1), "router");
  if (!router)
    return router.takeError();
  if (router->x != norm.out) {
    const wire::NodeProto *r = producer(router->x);
    if (!r || !is(*r, "Reshape") || input(*r, 0) != norm.out)
      return nodeError(n, "the router must be a linear layer of the RMS "
                          "norm's output (or of it Reshape'd to [-1, H])");
    const wire::TensorProto *shape = constant(input(*r, 1));
    if (!shape)
      return nodeError(*r, "its shape must be a constant");
    Expected<std::vector<int64_t>> dims = intValues(*shape);
    if (!dims)
      return dims.takeError();
    if (*dims != std::vector<int64_t>{-1, spec.hiddenSize})
      return nodeError(*r, "its shape must be [-1, " + Twine(spec.hiddenSize) +
                               "]");
    if (const wire::NodeProto *c = producer(input(*r, 1)))
      raise(*c);
    raise(*r);
  }
  const wire::TensorProto *fc2 = initializer(input(n, fc2In));
  if (!fc2 || fc2->dims_size() != 3)
    return nodeError(n, "fc2 (input " + Twine(fc2In) +
                            ") must be an initializer [E, H, I]" +
                            (quantised ? " (I packed)" : ""));
  int64_t E = fc2->dims(0),
          I = quantised ? fc2->dims(2) * 8 / bits : fc2->dims(2);
  if (quantised &&
      (I % 32 || spec.hiddenSize % 32 ||
       (blockSize && (I % blockSize || spec.hiddenSize % blockSize))))
    return nodeError(n, "attribute 'block_size' " + Twine(blockSize) +
                            " must divide hidden size " +
                            Twine(spec.hiddenSize) + " and expert size " +
                            Twine(I) + ", both multiples of 32");
  int64_t l = int64_t(layers.size()) - 1;
  if (l == 0) {
    spec.numExperts = E;
    spec.intermediateSize = I;
    spec.topK = *k;
    spec.normTopKProb = *normalize == 1;
  } else if (spec.numExperts != E || spec.intermediateSize != I ||
             spec.topK != *k || spec.normTopKProb != (*normalize == 1)) {
    return nodeError(n, "experts, their size, k and normalize_routing_weights "
                        "must be the same in every layer");
  }
  if (*k < 1 || *k > E)
    return nodeError(n, "k " + Twine(*k) + " must be in [1, " + Twine(E) + "]");
  int64_t H = spec.hiddenSize;
  // Expert biases (fc1's, fc2's, fc3's: the input before fc2, before fc3,
  // the last): zeros alone, dropped.
  struct Bias {
    int in;
    StringRef role;
    SmallVector<int64_t, 2> shape;
  };
  for (const Bias &b :
       {Bias{fc2In - 1, "fc1", {E, fused ? 2 * I : I}},
        Bias{fc3In - 1, "fc2", {E, H}}, Bias{inputs - 1, "fc3", {E, I}}})
    if (!input(n, b.in).empty())
      if (Error e = checkZeroBias(n, b.in, b.role, b.shape))
        return e;
  Layer &layer = layers.back();
  if (Error e = addLinear(layer.router = router->weight, *router, {E, H},
                          *producer(input(n, 1)), "router"))
    return e;
  std::string fc1Name = input(n, 2).str(), fc2Name = input(n, fc2In).str();
  std::string fc3Name = hasFc3 ? input(n, fc3In).str() : "";
  // The stacked tensors: QMoE's with their scales (the input after each).
  auto stacked = [&](const std::string &name, int in, ArrayRef<int64_t> shape,
                     StringRef role) {
    return quantised ? addQMoEWeight(name, input(n, in + 1), shape, bits,
                                     blockSize, n, role)
                     : addWeight(name, name, shape, n, role);
  };
  if (Error e = stacked(fc1Name, 2, {E, fused ? 2 * I : I, H}, "fc1"))
    return e;
  if (Error e = stacked(fc2Name, fc2In, {E, H, I}, "fc2"))
    return e;
  if (hasFc3)
    if (Error e = stacked(fc3Name, fc3In, {E, I, H}, "fc3"))
      return e;
  for (int64_t e = 0; e < E; ++e) {
    std::string idx = "[" + std::to_string(e) + "]";
    if (*fusion == 1) {
      // Expert e's [2I, H] block: gate rows 0, 2, ..., up rows 1, 3, ...
      layer.gate.push_back(fc1Name + idx + ".gate");
      layer.up.push_back(fc1Name + idx + ".up");
      (void)addSlice(layer.gate.back(), fc1Name, 2 * e * I, {I, H}, 0, 2,
                     2 * I);
      (void)addSlice(layer.up.back(), fc1Name, 2 * e * I, {I, H}, 1, 2, 2 * I);
    } else if (*fusion == 2) {
      layer.gate.push_back(fc1Name + idx + ".gate");
      layer.up.push_back(fc1Name + idx + ".up");
      (void)addSlice(layer.gate.back(), fc1Name, 2 * e * I, {I, H});
      (void)addSlice(layer.up.back(), fc1Name, (2 * e + 1) * I, {I, H});
    } else {
      layer.gate.push_back(fc1Name + idx);
      layer.up.push_back(fc3Name + idx);
      (void)addSlice(layer.gate.back(), fc1Name, e * I, {I, H});
      (void)addSlice(layer.up.back(), fc3Name, e * I, {I, H});
    }
    layer.down.push_back(fc2Name + idx);
    (void)addSlice(layer.down.back(), fc2Name, e * H, {H, I});
  }
  // The stacked tensors themselves are not weights of the module.
  weights.erase(fc1Name);
  weights.erase(fc2Name);
  if (hasFc3)
    weights.erase(fc3Name);
  raise(n);
  out = n.output(0);
  return Error::success();
}

Error Importer::matchLayer(StringRef h, std::string &next) {
  Expected<Norm> attnNorm = matchNorm(h, "attention");
  if (!attnNorm)
    return attnNorm.takeError();
  layers.emplace_back();
  if (Error e =
          addWeight(layers.back().attnNorm = attnNorm->weight, attnNorm->weight,
                    {spec.hiddenSize}, *attnNorm->node, "norm"))
    return e;
  std::string attn;
  if (Error e = matchAttention(*attnNorm, attn))
    return e;
  Expected<std::string> h2 = matchAdd(h, attn, "after attention");
  if (!h2)
    return h2.takeError();
  Expected<Norm> ffnNorm = matchNorm(*h2, "experts");
  if (!ffnNorm)
    return ffnNorm.takeError();
  if (Error e =
          addWeight(layers.back().ffnNorm = ffnNorm->weight, ffnNorm->weight,
                    {spec.hiddenSize}, *ffnNorm->node, "norm"))
    return e;
  std::string moe;
  if (Error e = matchMoE(*ffnNorm, moe))
    return e;
  Expected<std::string> h3 = matchAdd(*h2, moe, "after the experts");
  if (!h3)
    return h3.takeError();
  next = *h3;
  return Error::success();
}

Error Importer::raiseFused(std::string h) {
  // Layers until the residual stream feeds the final norm and lm_head.
  constexpr int64_t kMaxLayers = 1024;
  while (true) {
    // The final norm: its output is the lm_head's input alone.
    bool isFinal = false;
    for (const wire::NodeProto *c : consumers(h))
      if (is(*c, "SimplifiedLayerNormalization") ||
          is(*c, "SimplifiedLayerNormalization", "com.microsoft") ||
          is(*c, "RMSNormalization")) {
        std::vector<const wire::NodeProto *> users = consumers(c->output(0));
        isFinal = users.size() == 1 && consumers(h).size() == 1 &&
                  !users[0]->output(0).empty() &&
                  users[0]->output(0) == graph.output(0).name();
      }
    if (isFinal)
      break;
    if (int64_t(layers.size()) >= kMaxLayers)
      return error(path + ": more than " + Twine(kMaxLayers) + " layers");
    std::string next;
    if (Error e = matchLayer(h, next))
      return std::move(e);
    h = next;
  }
  if (layers.empty())
    return error(path + ": the graph has no decoder layers");
  Expected<Norm> norm = matchNorm(h, "final norm");
  if (!norm)
    return norm.takeError();
  finalNorm = norm->weight;
  if (Error e = addWeight(finalNorm, finalNorm, {spec.hiddenSize}, *norm->node,
                          "norm"))
    return std::move(e);
  Expected<Linear> head = matchLinear(graph.output(0).name(), "lm_head");
  if (!head)
    return head.takeError();
  if (head->x != norm->out)
    return error(path + ": the lm_head's input is not the final norm");
  // Tied when its weight is the embedding table as stored ([vocab, hidden]
  // = [out, in]). MatMul(x, E) multiplies by E itself: only a [hidden,
  // hidden] table fits, and then the lm_head is E's transpose, a weight of
  // its own (re-laid out) under another manifest name.
  lmHead = head->weight;
  spec.tieWordEmbeddings = lmHead == embedding && !head->transposed;
  if (lmHead == embedding && head->transposed)
    lmHead = embedding + " (transposed)";
  if (!spec.tieWordEmbeddings)
    if (Error e = addLinear(lmHead, *head, {spec.vocabSize, spec.hiddenSize},
                            *producer(graph.output(0).name()), "lm_head"))
      return std::move(e);
  return Error::success();
}

Error Importer::run(RaisedModel &out) {
  for (const wire::TensorProto &t : graph.initializer())
    if (!initializers.try_emplace(t.name(), &t).second)
      return error(path + ": initializer '" + printableText(t.name()) +
                   "' is given twice");
  if (graph.sparse_initializer_size())
    return error(path + ": sparse initializers are not supported");
  for (int i = 0; i < graph.node_size(); ++i) {
    const wire::NodeProto &n = graph.node(i);
    StringRef d = n.domain();
    if (!d.empty() && d != "ai.onnx" && d != "com.microsoft")
      return nodeError(n, "domain '" + printableText(d) + "' is not supported");
    for (const std::string &o : n.output())
      if (!o.empty() &&
          (!producers.try_emplace(o, i).second || initializers.count(o)))
        return nodeError(n,
                         "output '" + printableText(o) + "' is defined twice");
    for (const std::string &in : n.input())
      if (!in.empty())
        consumerMap[in].push_back(i);
    // attr() reads the first of a name; onnxruntime refuses a node with
    // two.
    for (size_t a = 0; a < n.attribute().size(); ++a)
      for (size_t b = 0; b < a; ++b)
        if (n.attribute()[a].name() == n.attribute()[b].name())
          return nodeError(n, "attribute '" +
                                  printableText(n.attribute()[a].name()) +
                                  "' is given twice");
    if (is(n, "Constant")) {
      const wire::AttributeProto *v = attr(n, "value");
      if (!v || v->type() != wire::AttributeProto::TENSOR ||
          n.output_size() != 1 || n.attribute_size() != 1)
        return nodeError(n, "only a Constant with a 'value' tensor is "
                            "supported");
      constants[n.output(0)] = &v->t();
    }
  }
  if (graph.output_size() < 1)
    return error(path + ": the graph has no outputs");

  // The embedding: Gather(initializer [V, H], a graph input).
  const wire::NodeProto *gather = nullptr;
  for (const wire::NodeProto &n : graph.node())
    if (is(n, "Gather") && initializer(input(n, 0)) && !producer(input(n, 1)) &&
        !constant(input(n, 1))) {
      if (gather)
        return nodeError(n, "a second embedding Gather");
      gather = &n;
    }
  if (!gather)
    return error(path + ": no embedding (a Gather of an initializer [vocab, "
                        "hidden] by the graph's token ids input)");
  {
    Expected<int64_t> axis = intAttr(*gather, "axis", 0);
    if (!axis)
      return axis.takeError();
    const wire::TensorProto *t = initializer(input(*gather, 0));
    if (*axis != 0 || t->dims_size() != 2)
      return nodeError(*gather, "the embedding must be a Gather on axis 0 of "
                                "a [vocab, hidden] initializer");
    spec.vocabSize = t->dims(0);
    spec.hiddenSize = t->dims(1);
    embedding = t->name();
    if (Error e =
            addWeight(embedding, embedding, {spec.vocabSize, spec.hiddenSize},
                      *gather, "embedding"))
      return std::move(e);
    raise(*gather);
  }

  // torch.onnx.export's decomposed graph (its RMS norm starts with Pow)
  // or ONNX Runtime GenAI's fused one.
  StringRef h = gather->output(0);
  auto isPow = [&](const wire::NodeProto *c) {
    if (is(*c, "Cast"))
      return llvm::any_of(consumers(c->output(0)),
                          [&](auto *d) { return is(*d, "Pow"); });
    return is(*c, "Pow");
  };
  if (llvm::any_of(consumers(h), isPow)) {
    if (Error e = raiseDecomposed(h))
      return std::move(e);
  } else if (Error e = raiseFused(h.str())) {
    return std::move(e);
  }

  // Nothing may be left over.
  for (const wire::NodeProto &n : graph.node())
    if (!raised.count(&n))
      return nodeError(n, "is not part of a pattern moe-compile raises (see "
                          "docs/frontends.md, ONNX)");
  for (int i = 1; i < graph.output_size(); ++i) {
    const wire::NodeProto *p = producer(graph.output(i).name());
    if (!p || !is(*p, "GroupQueryAttention", "com.microsoft"))
      return error(path + ": graph output '" +
                   printableText(graph.output(i).name()) +
                   "' is neither the logits nor an attention's present "
                   "key/value");
  }

  spec.architecture = "mixtral";
  spec.numLayers = int64_t(layers.size());
  spec.rmsNormEps = *eps;
  spec.layerWindows = windows;
  if (Error e = spec.validate(path))
    return std::move(e);

  out.spec = spec;
  out.weights = std::move(weights);
  out.embedding = embedding;
  out.finalNorm = finalNorm;
  out.lmHead = lmHead;
  out.layers = std::move(layers);
  for (auto &f : dataFiles)
    out.dataFiles.emplace_back(f.getKey().str(), f.getValue());
  llvm::sort(out.dataFiles);
  return Error::success();
}

} // namespace raising

std::string RaisedModel::weightName(WeightRole role, int64_t l,
                                    int64_t e) const {
  switch (role) {
  case WeightRole::Embedding:
    return embedding;
  case WeightRole::FinalNorm:
    return finalNorm;
  case WeightRole::LmHead:
    return lmHead;
  case WeightRole::AttnNorm:
    return layers[l].attnNorm;
  case WeightRole::QProj:
    return layers[l].q;
  case WeightRole::KProj:
    return layers[l].k;
  case WeightRole::VProj:
    return layers[l].v;
  case WeightRole::OProj:
    return layers[l].o;
  case WeightRole::FfnNorm:
    return layers[l].ffnNorm;
  case WeightRole::RouterGate:
    return layers[l].router;
  case WeightRole::ExpertGate:
    return layers[l].gate[e];
  case WeightRole::ExpertUp:
    return layers[l].up[e];
  case WeightRole::ExpertDown:
    return layers[l].down[e];
  }
  return "";
}

Expected<RaisedModel> raiseModel(StringRef path, StringRef dir,
                                 StringRef bytes) {
  auto model = raising::parseProto(path, bytes);
  if (!model)
    return model.takeError();
  RaisedModel out;
  if (Error e = raising::Importer(path, dir, **model).run(out))
    return std::move(e);
  return out;
}

} // namespace mlir::moe::onnxfe
