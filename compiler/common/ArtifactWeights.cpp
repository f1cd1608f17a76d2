//===- ArtifactWeights.cpp - the artifact's weights file --------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/common/ArtifactWeights.h"

#include "dialects/MoE/MoEOps.h"
#include "frontends/InputFiles.h"
#include "moert/quant.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/xxhash.h"

#include <algorithm>
#include <cstring>

using namespace llvm;

namespace mlir::moe {

namespace {

Error error(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

/// Element `i` of `data` stored as `element` (f32, f16 or bf16), as float.
float loadElement(const char *data, int64_t i, Type element) {
  if (element.isF32()) {
    uint32_t u = support::endian::read32le(data + 4 * i);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  uint16_t h = support::endian::read16le(data + 2 * i);
  if (element.isF16())
    return moert::halfBitsToFloat(h);
  uint32_t u = uint32_t(h) << 16; // bf16
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Quantises one row of `cols` floats into `out` as the block type B.
template <typename B>
void quantizeRow(const float *row, int64_t cols, char *out) {
  for (int64_t b = 0; b < cols / moert::kQuantBlock; ++b) {
    B block;
    moert::quantizeBlock(row + b * moert::kQuantBlock, block);
    std::memcpy(out + b * sizeof(B), &block, sizeof(B));
  }
}

void quantizeRow(QuantFormat format, const float *row, int64_t cols,
                 char *out) {
  switch (format) {
  case QuantFormat::Q8_0:
    return quantizeRow<moert::q8_0>(row, cols, out);
  case QuantFormat::Q4_0:
    return quantizeRow<moert::q4_0>(row, cols, out);
  case QuantFormat::Q4_1:
    return quantizeRow<moert::q4_1>(row, cols, out);
  case QuantFormat::Q4_K:
  case QuantFormat::Q5_K:
  case QuantFormat::Q6_K:
    break;
  }
  llvm_unreachable("moe-quantize-weights makes q8_0, q4_0 and q4_1 only");
}

/// The first block of a quantised row whose f16 scale (or q4_1's minimum)
/// overflowed to infinity, or -1. Finite weights can do that: a q8_0 block
/// reaching 65520 * 127 has no f16 scale.
int64_t firstInfiniteBlock(QuantFormat format, const char *row, int64_t cols) {
  int64_t bytes = format == QuantFormat::Q8_0   ? sizeof(moert::q8_0)
                  : format == QuantFormat::Q4_0 ? sizeof(moert::q4_0)
                                                : sizeof(moert::q4_1);
  for (int64_t b = 0; b < cols / moert::kQuantBlock; ++b) {
    const char *block = row + b * bytes;
    // d, then q4_1's m: f16 with an all-ones exponent is not finite.
    for (int f = 0; f < (format == QuantFormat::Q4_1 ? 2 : 1); ++f)
      if ((support::endian::read16le(block + 2 * f) & 0x7c00) == 0x7c00)
        return b;
  }
  return -1;
}

} // namespace

size_t ArtifactWeightsPlan::numQuantized() const {
  return size_t(llvm::count_if(tensors, [](const Tensor &t) {
    return t.quantElement && t.scalesPerRow == 0;
  }));
}

size_t ArtifactWeightsPlan::numRelaidOut() const {
  return size_t(llvm::count_if(tensors, [](const Tensor &t) {
    return t.transposed || t.rowStep > 0 || t.scalesPerRow > 0;
  }));
}

FailureOr<ArtifactWeightsPlan> planArtifactWeights(ModuleOp module,
                                                   StringRef fileName) {
  ArtifactWeightsPlan plan;
  auto dir = module->getAttrOfType<StringAttr>("moe.weight_dir");
  SmallVector<WeightSourceOp> pending;
  for (auto source : module.getOps<WeightSourceOp>())
    if (source.getQuantized() || source.hasLayout())
      pending.push_back(source);
  if (pending.empty())
    return plan;
  if (!dir)
    return module.emitError("weights to quantise or re-lay out need "
                            "moe.weight_dir, the directory of the model's "
                            "files");

  // The data section first (offsets relative to it), in manifest order.
  uint64_t data = 0;
  std::string formats;
  for (WeightSourceOp source : pending) {
    auto from = cast<RankedTensorType>(source.getType());
    auto to = cast<RankedTensorType>(source.getWeightType());
    ArtifactWeightsPlan::Tensor t;
    t.name = source.getName().str();
    SmallString<256> path(dir.getValue());
    sys::path::append(path, source.getFile());
    t.sourcePath = std::string(path);
    t.sourceOffset = source.getOffset();
    t.sourceElement = from.getElementType();
    if (source.getQuantized() || source.getScales())
      t.quantElement = to.getElementType();
    if (std::optional<Type> scales = source.getScales()) {
      auto st = cast<RankedTensorType>(*scales);
      t.scalesPerRow = st.getDimSize(1);
      t.scalesOffset = *source.getScalesOffset();
      t.scalesElement = st.getElementType();
    }
    t.rows = from.getDimSize(0);
    t.cols = from.getRank() > 1 ? from.getDimSize(1) : from.getDimSize(0);
    if (from.getRank() == 1)
      t.rows = 1;
    t.transposed = source.getTransposed();
    if (std::optional<Type> of = source.getRowsOf()) {
      t.rowStart = int64_t(*source.getRowStart());
      t.rowStep = int64_t(*source.getRowStep());
      t.sourceRows = cast<RankedTensorType>(*of).getDimSize(0);
    }
    t.offset = data;
    t.size = uint64_t(getStorageBytes(to));
    data += t.size;
    if (t.quantElement) {
      StringRef format =
          stringifyQuantFormat(cast<QuantType>(t.quantElement).getFormat());
      if (!StringRef(formats).contains(format))
        formats += (formats.empty() ? "" : ",") + format.str();
    }
    plan.tensors.push_back(std::move(t));
  }

  // Same sources, layouts and formats: the same id (a rebuild writes the
  // same file); any other checkpoint, layout or format: another.
  std::string identity = "moe-artifact-weights 2\n";
  for (const auto &t : plan.tensors) {
    sys::fs::file_status status;
    if (std::error_code ec = sys::fs::status(t.sourcePath, status))
      return module.emitError("cannot stat ")
             << t.sourcePath << " (weight '" << t.name
             << "'): " << ec.message();
    std::string stored;
    raw_string_ostream os(stored);
    os << (t.quantElement ? t.quantElement : t.sourceElement);
    if (t.scalesPerRow)
      os << " scales " << t.scalesPerRow << "x" << t.scalesElement << " at "
         << t.scalesOffset;
    identity +=
        formatv("{0}\n{1}\n{2}\n{3}\n{4}\n{5}\n{6}x{7} t{8} r{9}:{10}:{11}\n",
                t.name, t.sourcePath, t.sourceOffset, status.getSize(),
                status.getLastModificationTime().time_since_epoch().count(),
                stored, t.rows, t.cols, int(t.transposed), t.rowStart,
                t.rowStep, t.sourceRows)
            .str();
  }
  plan.buildId = formatv("{0:x-16}", xxh3_64bits(identity)).str();

  // The safetensors header: a quantised tensor is its raw blocks, U8
  // [rows, row bytes]; a float one its dtype and shape. Padded with spaces
  // to 8 bytes as the format's writers do.
  std::string json;
  {
    raw_string_ostream os(json);
    json::OStream j(os);
    j.object([&] {
      j.attributeObject("__metadata__", [&] {
        j.attribute("producer", "moe-compile");
        if (!formats.empty())
          j.attribute("quantization", formats);
        j.attribute("moe.build", plan.buildId);
      });
      for (auto [source, t] : llvm::zip(pending, plan.tensors)) {
        auto to = cast<RankedTensorType>(source.getWeightType());
        j.attributeObject(t.name, [&] {
          Type e = to.getElementType();
          j.attribute("dtype", t.quantElement ? "U8"
                               : e.isF32()    ? "F32"
                               : e.isF16()    ? "F16"
                                              : "BF16");
          j.attributeArray("shape", [&] {
            if (t.quantElement) {
              j.value(t.rows);
              j.value(int64_t(t.size / uint64_t(t.rows)));
            } else {
              for (int64_t d : to.getShape())
                j.value(d);
            }
          });
          j.attributeArray("data_offsets", [&] {
            j.value(int64_t(t.offset));
            j.value(int64_t(t.offset + t.size));
          });
        });
      }
    });
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  plan.header.resize(8);
  support::endian::write64le(plan.header.data(), json.size());
  plan.header += json;
  uint64_t base = plan.header.size();
  plan.fileSize = base + data;

  // The sources now name the bytes that will exist, in their own layout.
  for (auto [source, t] : llvm::zip(pending, plan.tensors)) {
    t.offset += base;
    source.setArtifact(true);
    source.setFile(fileName);
    source.setOffset(t.offset);
    source.setType(source.getWeightType());
    source.removeQuantizedAttr();
    source.removeTransposedAttr();
    source.removeRowStartAttr();
    source.removeRowStepAttr();
    source.removeRowsOfAttr();
    source.removeScalesOffsetAttr();
    source.removeScalesAttr();
  }
  return plan;
}

namespace {

/// Transposes `rows` x `cols` elements of `bytes` each from `in` (row-major)
/// into `out` ([cols, rows], row-major), in square tiles that stay in the
/// cache.
template <typename T>
void transposeTiles(const char *in, int64_t rows, int64_t cols, char *out) {
  constexpr int64_t kTile = 32;
  const T *src = reinterpret_cast<const T *>(in);
  T *dst = reinterpret_cast<T *>(out);
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile)
      for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c)
          dst[c * rows + r] = src[r * cols + c];
}

void transpose(const char *in, int64_t rows, int64_t cols, uint64_t bytes,
               char *out) {
  if (bytes == 4)
    transposeTiles<uint32_t>(in, rows, cols, out);
  else
    transposeTiles<uint16_t>(in, rows, cols, out);
}

/// Writes tensor `t`, held in `file` as ONNX Runtime's QMoE holds blocks
/// (offset-binary values, scales apart), as our q8_0 or q4_0 blocks: the
/// same values exactly, or an error naming the first scale that is not an
/// f16 (our blocks' scale).
Error writeSplitScales(const ArtifactWeightsPlan::Tensor &t, InputFile &file,
                       raw_ostream &os, uint64_t &done, uint64_t total,
                       function_ref<void(uint64_t, uint64_t)> progress,
                       uint64_t chunkBytes) {
  auto format = cast<QuantType>(t.quantElement).getFormat();
  bool q8 = format == QuantFormat::Q8_0;
  uint64_t valueRow = uint64_t(t.cols) * (q8 ? 8 : 4) / 8;
  uint64_t scaleBytes = t.scalesElement.getIntOrFloatBitWidth() / 8;
  uint64_t scaleRow = uint64_t(t.scalesPerRow) * scaleBytes;
  int64_t group = t.cols / t.scalesPerRow; // values per scale
  int64_t step = t.rowStep > 0 ? t.rowStep : 1;
  int64_t start = t.rowStep > 0 ? t.rowStart : 0;
  uint64_t outRow = t.size / uint64_t(t.rows);
  uint64_t blockBytes = q8 ? sizeof(moert::q8_0) : sizeof(moert::q4_0);
  // Source bytes read per weight row: whole steps of rows, a step beyond
  // the source's rows counting as them (one row may have any step, whose
  // product with the row's bytes could wrap to 0).
  uint64_t stride =
      uint64_t(t.rowStep > 0 ? std::min(t.rowStep, t.sourceRows) : 1);
  int64_t rowsPerChunk = int64_t(std::clamp<uint64_t>(
      chunkBytes / (valueRow * stride), 1, uint64_t(t.rows)));
  std::vector<char> out(static_cast<size_t>(outRow));
  for (int64_t r0 = 0; r0 < t.rows; r0 += rowsPerChunk) {
    int64_t rows = std::min(rowsPerChunk, t.rows - r0);
    int64_t first = start + r0 * step, span = (rows - 1) * step + 1;
    auto values = file.read(t.sourceOffset + uint64_t(first) * valueRow,
                            uint64_t(span) * valueRow);
    if (!values)
      return error("weight '" + t.name + "': " + toString(values.takeError()));
    auto scales = file.read(t.scalesOffset + uint64_t(first) * scaleRow,
                            uint64_t(span) * scaleRow);
    if (!scales)
      return error("weight '" + t.name + "': " + toString(scales.takeError()));
    for (int64_t r = 0; r < rows; ++r) {
      const auto *v = reinterpret_cast<const uint8_t *>(
          (*values)->getBufferStart() + uint64_t(r * step) * valueRow);
      const char *sc =
          (*scales)->getBufferStart() + uint64_t(r * step) * scaleRow;
      for (int64_t b = 0; b < t.cols / moert::kQuantBlock; ++b) {
        int64_t c0 = b * moert::kQuantBlock;
        float d = loadElement(sc, c0 / group, t.scalesElement);
        uint16_t h = moert::floatToHalfBits(d);
        float back = moert::halfBitsToFloat(h);
        if (std::memcmp(&back, &d, 4) != 0)
          return error(formatv(
              "weight '{0}' in {1}: the scale {2:e} of its values [{3}, "
              "{4}..{5}] is not an f16, which {6}'s blocks hold: converting "
              "it would change the weight (store the scales as float16)",
              t.name, t.sourcePath, d, r0 + r, c0 / group * group,
              (c0 / group + 1) * group - 1, stringifyQuantFormat(format)));
        char *block = out.data() + uint64_t(b) * blockBytes;
        support::endian::write16le(block, h);
        if (q8) {
          // u - 128 as int8.
          for (int64_t i = 0; i < moert::kQuantBlock; ++i)
            block[2 + i] = char(v[c0 + i] ^ 0x80);
        } else {
          // ONNX Runtime: value c in byte c / 2, the low nibble first; ours:
          // values j and j + 16 in byte j.
          auto nibble = [&](int64_t c) {
            return uint8_t((v[c / 2] >> (4 * (c & 1))) & 0xf);
          };
          for (int64_t j = 0; j < 16; ++j)
            block[2 + j] =
                char(nibble(c0 + j) | uint8_t(nibble(c0 + j + 16) << 4));
        }
      }
      os.write(out.data(), out.size());
    }
    done += uint64_t(rows) * outRow;
    progress(done, total);
  }
  return Error::success();
}

} // namespace

Error writeArtifactWeights(
    const ArtifactWeightsPlan &plan, raw_ostream &os,
    function_ref<void(uint64_t done, uint64_t total)> progress,
    uint64_t chunkBytes) {
  os << plan.header;
  uint64_t done = plan.header.size();
  StringMap<std::unique_ptr<InputFile>> files;
  std::vector<float> row;
  std::vector<char> out, band, strip;
  for (const auto &t : plan.tensors) {
    auto &file = files[t.sourcePath];
    if (!file) {
      Expected<InputFile> opened = InputFile::open(t.sourcePath);
      if (!opened)
        return error("weight '" + t.name +
                     "': " + toString(opened.takeError()));
      file = std::make_unique<InputFile>(std::move(*opened));
    }
    auto readBytes = [&](uint64_t offset,
                         uint64_t size) -> Expected<const char *> {
      auto chunk = file->read(t.sourceOffset + offset, size);
      if (!chunk)
        return error("weight '" + t.name + "': " + toString(chunk.takeError()));
      strip.assign((*chunk)->getBufferStart(), (*chunk)->getBufferEnd());
      return strip.data();
    };
    if (t.scalesPerRow > 0) {
      if (Error e = writeSplitScales(t, *file, os, done, plan.fileSize,
                                     progress, chunkBytes))
        return e;
      continue;
    }
    uint64_t elementBytes = t.sourceElement.getIntOrFloatBitWidth() / 8;
    uint64_t rowBytes = uint64_t(t.cols) * elementBytes;
    uint64_t outRow = t.size / uint64_t(t.rows);
    // Source bytes per weight row read: a row selection reads whole
    // strides of the source's rows.
    uint64_t readPerRow =
        t.rowStep > 0 ? rowBytes * uint64_t(std::min(t.rowStep, t.sourceRows))
                      : rowBytes;
    int64_t rowsPerChunk = int64_t(
        std::clamp<uint64_t>(chunkBytes / readPerRow, 1, uint64_t(t.rows)));
    row.resize(size_t(t.cols));
    out.resize(size_t(outRow));
    band.resize(size_t(uint64_t(rowsPerChunk) * rowBytes));
    for (int64_t r0 = 0; r0 < t.rows; r0 += rowsPerChunk) {
      int64_t rows = std::min(rowsPerChunk, t.rows - r0);
      // The weight's rows [r0, r0 + rows) into `band`, in its own layout.
      const char *src;
      if (t.transposed) {
        // Column c of the band is row c of the file, bytes [r0, r0 + rows):
        // one strip per source row, then the band transposed in tiles.
        std::vector<char> gathered(size_t(uint64_t(rows) * rowBytes));
        uint64_t segment = uint64_t(rows) * elementBytes;
        for (int64_t c = 0; c < t.cols; ++c) {
          Expected<const char *> got = readBytes(
              (uint64_t(c) * uint64_t(t.rows) + uint64_t(r0)) * elementBytes,
              segment);
          if (!got)
            return got.takeError();
          std::memcpy(gathered.data() + uint64_t(c) * segment, *got, segment);
        }
        transpose(gathered.data(), t.cols, rows, elementBytes, band.data());
        src = band.data();
      } else if (t.rowStep > 0) {
        int64_t first = t.rowStart + r0 * t.rowStep;
        int64_t span = (rows - 1) * t.rowStep + 1;
        Expected<const char *> got =
            readBytes(uint64_t(first) * rowBytes, uint64_t(span) * rowBytes);
        if (!got)
          return got.takeError();
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(band.data() + uint64_t(r) * rowBytes,
                      *got + uint64_t(r * t.rowStep) * rowBytes, rowBytes);
        src = band.data();
      } else {
        Expected<const char *> got =
            readBytes(uint64_t(r0) * rowBytes, uint64_t(rows) * rowBytes);
        if (!got)
          return got.takeError();
        src = *got;
      }
      if (!t.quantElement) {
        os.write(src, size_t(uint64_t(rows) * rowBytes));
        done += uint64_t(rows) * outRow;
        progress(done, plan.fileSize);
        continue;
      }
      auto format = cast<QuantType>(t.quantElement).getFormat();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < t.cols; ++c) {
          float v =
              loadElement(src + uint64_t(r) * rowBytes, c, t.sourceElement);
          if (!std::isfinite(v))
            return error(formatv("weight '{0}' in {1} holds {2} at [{3}, "
                                 "{4}]; a quantised format cannot store it "
                                 "(fix the checkpoint)",
                                 t.name, t.sourcePath,
                                 std::isnan(v) ? "NaN" : "infinity", r0 + r,
                                 c));
          row[size_t(c)] = v;
        }
        quantizeRow(format, row.data(), t.cols, out.data());
        if (int64_t b = firstInfiniteBlock(format, out.data(), t.cols);
            b >= 0) {
          int64_t c0 = b * moert::kQuantBlock;
          float big = 0;
          for (int64_t c = c0; c < c0 + moert::kQuantBlock; ++c)
            big = std::max(big, std::fabs(row[size_t(c)]));
          return error(formatv(
              "weight '{0}' in {1}: the block at [{2}, {3}..{4}] reaches "
              "{5:e}, beyond what {6}'s f16 scale can hold; keep this weight "
              "unquantised (--quantize-only=experts) or fix the checkpoint",
              t.name, t.sourcePath, r0 + r, c0, c0 + moert::kQuantBlock - 1,
              big, stringifyQuantFormat(format)));
        }
        os.write(out.data(), out.size());
      }
      done += uint64_t(rows) * outRow;
      progress(done, plan.fileSize);
    }
  }
  return Error::success();
}

} // namespace mlir::moe
