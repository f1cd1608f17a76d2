//===- HostPlan.cpp - what every target's host plan shares -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/common/HostPlan.h"

#include "llvm/Support/Format.h"

using namespace mlir;
using namespace mlir::moe;

std::string mlir::moe::cppQuoted(StringRef s) {
  // Printable ASCII as itself, but for the three characters that end or
  // change a literal ('"', '\\', and '?', which could start a trigraph);
  // every other byte as a three-digit octal escape, which cannot run on into
  // the characters after it (hex escapes can).
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\' || c == '?') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      out += '\\';
      out += char('0' + (c >> 6));
      out += char('0' + ((c >> 3) & 7));
      out += char('0' + (c & 7));
    }
  }
  return out + "\"";
}

std::string mlir::moe::cppComment(StringRef s) {
  // A line comment ends at a newline and continues past a trailing
  // backslash (or the trigraph ??/): keep printable ASCII but for those.
  std::string out;
  for (unsigned char c : s)
    out += c >= 0x20 && c < 0x7f && c != '\\' && c != '?' ? char(c) : '_';
  return out;
}

std::string mlir::moe::printableText(StringRef s) {
  std::string out = s.str();
  for (char &c : out)
    if ((unsigned char)c < 0x20 || c == 0x7f)
      c = '?';
  return out;
}

std::string mlir::moe::cppFloat(double v) {
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.9gf", v);
  return s;
}

std::string mlir::moe::cppDouble(double v) {
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.17g", v);
  return s;
}

namespace {

StringRef dtypeEnum(Type t) {
  if (t.isF16())
    return "MOERT_F16";
  if (t.isBF16())
    return "MOERT_BF16";
  return "MOERT_F32";
}

int64_t layerOfCache(Value cache) {
  auto arg = dyn_cast<BlockArgument>(cache);
  return arg ? int64_t(arg.getArgNumber()) - 2 : -1;
}

} // namespace

LogicalResult HostPlanEmitter::collectManifest() {
  for (auto source : module.getOps<WeightSourceOp>()) {
    manifestIndex[source.getName()] = manifest.size();
    manifest.push_back(source);
  }
  WalkResult r = module.walk([&](WeightOp w) {
    if (!manifestIndex.count(w.getName())) {
      w.emitOpError("the ")
          << targetName << " target needs a moe.weight_source for '"
          << w.getName() << "' (import the model with moe-translate)";
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(r.wasInterrupted());
}

std::string HostPlanEmitter::allocate(Value v, bool ints) {
  int64_t perToken = getFloatsPerToken(v);
  if (v == logitsValue) {
    names[v] = "logits";
    return "logits";
  }
  // moe-plan-memory's offset when there is one, else a range of its own.
  int64_t offset = arenaPerToken;
  auto result = cast<OpResult>(v);
  if (auto planned = result.getOwner()->getAttrOfType<DenseI64ArrayAttr>(
          "moe.arena_offsets");
      planned && int64_t(planned.size()) > result.getResultNumber() &&
      planned[result.getResultNumber()] >= 0)
    offset = planned[result.getResultNumber()];
  arenaPerToken = std::max(arenaPerToken, offset + perToken);
  std::string name = "b" + std::to_string(names.size());
  out << "  " << (ints ? "int32_t" : "float") << " *" << name << " = ";
  if (ints)
    out << "reinterpret_cast<int32_t *>(";
  out << "arena + n_max * " << offset << (ints ? ")" : "") << ";\n";
  names[v] = name;
  return name;
}

int64_t HostPlanEmitter::scratch(Operation *op) {
  int64_t perToken = getScratchFloatsPerToken(op);
  int64_t offset = arenaPerToken;
  if (auto planned = op->getAttrOfType<IntegerAttr>("moe.scratch_offset"))
    offset = planned.getInt();
  arenaPerToken = std::max(arenaPerToken, offset + perToken);
  return offset;
}

std::string HostPlanEmitter::weight(Value v) {
  if (auto w = v.getDefiningOp<WeightOp>())
    return "W" + std::to_string(manifestIndex.lookup(w.getName()));
  if (!notAWeight)
    notAWeight = v;
  return "nullptr";
}

const HostPlanEmitter::Cache *HostPlanEmitter::planCache(AttentionOp a) {
  int64_t layer = layerOfCache(a.getCache());
  if (layer < 0 || layer >= int64_t(caches.size()) || caches[layer].seen) {
    a.emitOpError("the ") << targetName
                          << " target needs each attention to read its own "
                             "cache argument of @forward";
    return nullptr;
  }
  auto type = cast<KVCacheType>(a.getCache().getType());
  if (!type.getElementType().isF32()) {
    a.emitOpError("the ") << targetName
                          << " target keeps KV caches in f32, not "
                          << type.getElementType();
    return nullptr;
  }
  Cache &c = caches[layer];
  c.seen = true;
  c.kvHeads = type.getNumKvHeads();
  c.headDim = type.getHeadDim();
  c.window = a.getSlidingWindow().value_or(0);
  if (type.hasStaticCapacity())
    c.capacity = type.getCapacity();
  else
    c.capacity = c.window ? std::min(c.window, maxPositions) : maxPositions;
  if (c.window && c.capacity < std::min(c.window, maxPositions)) {
    a.emitOpError("cache capacity ")
        << c.capacity << " is smaller than the window it must hold";
    return nullptr;
  }
  if (!c.window && c.capacity < maxPositions) {
    a.emitOpError("cache capacity ")
        << c.capacity << " cannot hold " << maxPositions << " positions";
    return nullptr;
  }
  names[a.getCacheOut()] = name(a.getCache());
  return &c;
}

LogicalResult HostPlanEmitter::emitForward(func::FuncOp func) {
  Block &entry = func.getBody().front();
  FunctionType type = func.getFunctionType();
  int64_t layers = int64_t(type.getNumInputs()) - 2;
  if (layers < 1 || type.getNumResults() != size_t(layers) + 1)
    return func.emitOpError("@forward must take (tokens, positions, caches...) "
                            "and return (logits, caches...)");
  caches.resize(size_t(layers));
  names[entry.getArgument(0)] = "tokens";
  names[entry.getArgument(1)] = "positions";
  for (int64_t l = 0; l < layers; ++l)
    names[entry.getArgument(2 + l)] = "ex->caches[" + std::to_string(l) + "]";
  auto ret = cast<func::ReturnOp>(entry.getTerminator());
  logitsValue = ret.getOperand(0);

  for (Operation &op : entry) {
    if (isa<WeightOp, func::ReturnOp>(op))
      continue;
    if (failed(emitOp(&op)))
      return failure();
    if (notAWeight)
      return op.emitOpError("the ")
             << targetName << " target needs its weights to come from "
             << "moe.weight ops";
  }
  for (int64_t l = 0; l < layers; ++l) {
    if (names.lookup(ret.getOperand(1 + l)) !=
        names.lookup(entry.getArgument(2 + l)))
      return func.emitOpError("result ")
             << (1 + l) << " must be the cache of layer " << l;
    if (!caches[l].seen)
      return func.emitOpError("cache argument ") << (2 + l) << " is never used";
  }
  if (names.lookup(logitsValue) != "logits")
    return func.emitOpError("the logits must be computed by an op of @forward");
  return success();
}

LogicalResult HostPlanEmitter::run() {
  auto dir = module->getAttrOfType<StringAttr>("moe.weight_dir");
  auto model = module->getAttrOfType<DictionaryAttr>("moe.model");
  if (!dir || !model)
    return module.emitError("the ")
           << targetName
           << " target needs a model imported by moe-translate "
              "(moe.weight_dir and moe.model)";
  weightDir = dir.getValue();
  auto intField = [&](StringRef key) -> int64_t {
    auto a = dyn_cast_or_null<IntegerAttr>(model.get(key));
    return a ? a.getInt() : 0;
  };
  vocab = intField("vocab_size");
  hidden = intField("hidden_size");
  maxPositions = options.maxPositions > 0 ? options.maxPositions
                                          : intField("max_positions");
  if (maxPositions <= 0 || vocab <= 0)
    return module.emitError("moe.model lacks vocab_size or max_positions");
  auto func = module.lookupSymbol<func::FuncOp>("forward");
  if (!func)
    return module.emitError("no func.func @forward to compile");
  return failure(failed(collectManifest()) || failed(emitForward(func)));
}

void HostPlanEmitter::writeTables(raw_ostream &os) const {
  os << "const moert_weight_desc kWeights[] = {\n";
  for (WeightSourceOp s : manifest) {
    auto t = cast<RankedTensorType>(s.getType());
    os << "  {" << cppQuoted(s.getName()) << ", " << cppQuoted(s.getFile())
       << ", " << s.getOffset() << "ull, " << s.getSizeInBytes() << "ull, "
       << dtypeEnum(t.getElementType()) << ", " << t.getDimSize(0) << ", "
       << (t.getRank() > 1 ? t.getDimSize(1) : 1) << ", " << t.getRank()
       << "},\n";
  }
  os << "};\n\nconst moert_cache_desc kCaches[] = {\n";
  for (const Cache &c : caches)
    os << "  {" << c.kvHeads << ", " << c.headDim << ", " << c.capacity << ", "
       << c.window << "},\n";
  os << "};\n\n"
     << "int64_t scratchFloats(int64_t n_max) { return n_max * "
     << arenaPerToken;
  if (workspaceFloats)
    os << " + " << workspaceFloats;
  os << "; }\n\n";
}

void HostPlanEmitter::writeDescriptor(raw_ostream &os,
                                      StringRef targetFields) const {
  int64_t layers = int64_t(caches.size());
  int64_t cacheFloats = 0;
  for (const Cache &c : caches)
    cacheFloats += 2 * c.kvHeads * c.capacity * c.headDim;
  std::string plan;
  llvm::raw_string_ostream p(plan);
  p << "model: " << options.modelName << " (" << layers << " layers, hidden "
    << hidden << ", vocab " << vocab << "), " << targetName << " target\n"
    << "weights: " << manifest.size() << " tensors in "
    << printableText(weightDir) << "\n"
    << "activation arena: " << arenaPerToken
    << " floats per token of the batch";
  if (workspaceFloats)
    p << " + " << workspaceFloats << " floats of workspace";
  p << "\n"
    << "kv cache: " << cacheFloats * 4 << " bytes for " << maxPositions
    << " positions\n";
  for (auto [l, c] : llvm::enumerate(caches))
    p << "  layer " << l << ": " << c.kvHeads << " kv heads x " << c.capacity
      << " slots x " << c.headDim
      << (c.window ? " (rolling, window " + std::to_string(c.window) + ")"
                   : std::string(" (full)"))
      << "\n";
  os << "} // namespace\n\n"
     << "extern \"C\" const moert_program moert_compiled_program = {\n"
     << "  MOERT_ABI_VERSION, " << cppQuoted(options.modelName) << ", "
     << cppQuoted(weightDir) << ",\n"
     << "  " << vocab << ", " << hidden << ", " << layers << ", "
     << maxPositions << ",\n"
     << "  " << manifest.size() << ", kWeights, kCaches, scratchFloats, "
     << "forward,\n"
     << "  " << cppQuoted(plan) << ",\n"
     << "  " << targetFields << "};\n";
}
