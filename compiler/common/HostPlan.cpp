//===- HostPlan.cpp - what every target's host plan shares -----*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/common/HostPlan.h"

#include "frontends/InputFiles.h"

#include "llvm/Support/CheckedArithmetic.h"
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
  // (verifyContract bounded both, so the sum cannot overflow.)
  int64_t offset = arenaPerToken;
  auto result = cast<OpResult>(v);
  if (auto planned = result.getOwner()->getAttrOfType<DenseI64ArrayAttr>(
          "moe.arena_offsets");
      planned && int64_t(planned.size()) > result.getResultNumber() &&
      planned[result.getResultNumber()] >= 0)
    offset = planned[result.getResultNumber()];
  arenaPerToken = std::max(arenaPerToken, offset + perToken);
  if (arenaPerToken > kMaxArenaFloatsPerToken && !arenaTooLarge)
    arenaTooLarge = result.getOwner();
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
  if (arenaPerToken > kMaxArenaFloatsPerToken && !arenaTooLarge)
    arenaTooLarge = op;
  return offset;
}

std::string HostPlanEmitter::name(Value v) {
  auto it = names.find(v);
  if (it != names.end())
    return it->second;
  if (!unnamed)
    unnamed = v;
  return "";
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

namespace {
/// Fails with a message on `user` unless `indices` are the expert indices of
/// a router over at most `experts` experts choosing `k` each: what the
/// kernels index weight tables and offsets with.
LogicalResult checkExpertIndices(Operation *user, Value indices,
                                 int64_t experts, int64_t k) {
  int64_t routed = 0, chosen = 0;
  if (auto r = indices.getDefiningOp<RouterOp>();
      r && indices == r.getIndices())
    routed = r.getNumExperts(), chosen = r.getK();
  else if (auto f = indices.getDefiningOp<FusedRouterOp>();
           f && indices == f.getIndices())
    routed = f.getNumExperts(), chosen = f.getK();
  else
    return user->emitOpError("the targets need expert indices computed by "
                             "a moe.router or moe.fused_router");
  if (routed > experts || chosen != k)
    return user->emitOpError("routes top ")
           << k << " of " << experts << " experts, but its indices choose "
           << chosen << " of " << routed;
  return success();
}

/// Fails unless `perm` (and `offsets`, when given) are the results of one
/// moe.expert_permute over `experts` experts (any, when 0) with `k` choices.
LogicalResult checkPermutation(Operation *user, Value perm, Value offsets,
                               int64_t experts, int64_t k) {
  auto permute = perm.getDefiningOp<ExpertPermuteOp>();
  if (!permute || perm != permute.getPerm() ||
      (offsets && offsets != permute.getOffsets()))
    return user->emitOpError("the targets need the permutation")
           << (offsets ? " and offsets" : "") << " of one moe.expert_permute";
  int64_t permuted = permute.getIndices().getType().getDimSize(1);
  if ((experts && int64_t(permute.getNumExperts()) != experts) || permuted != k)
    return user->emitOpError("takes top ")
           << k << (experts ? " of " + std::to_string(experts) : "")
           << " experts, but its permutation is of top " << permuted << " of "
           << permute.getNumExperts();
  return success();
}

/// Rows per batch token of an activation's buffer.
int64_t rowsPerToken(Value v) {
  auto type = cast<RankedTensorType>(v.getType());
  return getFloatsPerToken(v) / std::max<int64_t>(1, type.getDimSize(1));
}
} // namespace

LogicalResult HostPlanEmitter::verifyContract(func::FuncOp func) {
  // The signature forward's C++ has: (tokens, positions, caches...) ->
  // (logits [?, vocab] f32, caches...).
  FunctionType type = func.getFunctionType();
  auto isIds = [](Type t) {
    auto r = dyn_cast<RankedTensorType>(t);
    return r && r.getRank() == 1 && r.getElementType().isInteger(32);
  };
  auto logits = type.getNumResults()
                    ? dyn_cast<RankedTensorType>(type.getResult(0))
                    : RankedTensorType();
  if (int64_t layers = getModel(module).getNumLayers();
      layers != int64_t(type.getNumInputs()) - 2)
    return func.emitOpError("has ")
           << int64_t(type.getNumInputs()) - 2
           << " cache arguments, but moe.model's num_layers is " << layers;
  if (type.getNumInputs() < 3 || !isIds(type.getInput(0)) ||
      !isIds(type.getInput(1)) || !logits || logits.getRank() != 2 ||
      !logits.getElementType().isF32() ||
      llvm::any_of(type.getInputs().drop_front(2),
                   [](Type t) { return !isa<KVCacheType>(t); }) ||
      llvm::any_of(type.getResults().drop_front(1),
                   [](Type t) { return !isa<KVCacheType>(t); }))
    return func.emitOpError("@forward must take (tensor<?xi32> tokens, "
                            "tensor<?xi32> positions, !moe.kv_cache...) and "
                            "return (tensor<?xVOCABxf32> logits, "
                            "!moe.kv_cache...)");
  if (logits.getDimSize(1) != vocab)
    return func.emitOpError("returns logits of width ")
           << logits.getDimSize(1) << ", but moe.model's vocab_size is "
           << vocab;
  // The caller's logits buffer holds one row per token: a value of the
  // permuted domain (k rows a token) would overflow it.
  Value returned = func.getBody().front().getTerminator()->getOperand(0);
  if (rowsPerToken(returned) != 1)
    return func.emitOpError("returns logits of ")
           << rowsPerToken(returned)
           << " rows per token; the caller's buffer holds one";
  Value tokens = func.getArgument(0);
  WalkResult r = func.walk([&](Operation *op) -> WalkResult {
    if (auto o = op->getAttrOfType<DenseI64ArrayAttr>("moe.arena_offsets"))
      if (llvm::any_of(o.asArrayRef(), [](int64_t x) {
            return x < -1 || x > kMaxArenaFloatsPerToken;
          }))
        return op->emitOpError("moe.arena_offsets entries must be -1 or in "
                               "[0, ")
               << kMaxArenaFloatsPerToken << "]";
    if (auto o = op->getAttrOfType<IntegerAttr>("moe.scratch_offset"))
      if (o.getInt() < 0 || o.getInt() > kMaxArenaFloatsPerToken)
        return op->emitOpError("moe.scratch_offset must be in [0, ")
               << kMaxArenaFloatsPerToken << "]";
    for (Value result : op->getResults()) {
      if (!isa<RankedTensorType>(result.getType()) || isa<WeightOp>(op))
        continue;
      int64_t floats = getFloatsPerToken(result);
      if (floats < 0 || floats > kMaxArenaFloatsPerToken)
        return op->emitOpError("a result of ")
               << floats << " floats per token does not fit the arena";
    }
    if (auto e = dyn_cast<EmbeddingOp>(op)) {
      // The runtime checks token ids against vocab_size only.
      if (e.getIds() != tokens)
        return op->emitOpError("the targets look up the token ids of "
                               "@forward's first argument only");
      if (e.getTable().getType().getDimSize(0) != vocab)
        return op->emitOpError("has ")
               << e.getTable().getType().getDimSize(0)
               << " table rows, but moe.model's vocab_size is " << vocab;
      if (hidden && e.getTable().getType().getDimSize(1) != hidden)
        return op->emitOpError("has ")
               << e.getTable().getType().getDimSize(1)
               << " table columns, but moe.model's hidden_size is " << hidden;
    } else if (auto e = dyn_cast<ExpertsOp>(op)) {
      return checkExpertIndices(op, e.getIndices(), e.getNumExperts(),
                                width(e.getWeights()));
    } else if (auto p = dyn_cast<ExpertPermuteOp>(op)) {
      return checkExpertIndices(op, p.getIndices(), p.getNumExperts(),
                                width(p.getIndices()));
    } else if (auto g = dyn_cast<GroupedMatmulOp>(op)) {
      if (failed(checkPermutation(op, g.getPerm(), g.getOffsets(),
                                  g.getNumExperts(), g.getK())))
        return failure();
      // Without gather the input is the permuted batch: k rows a token.
      int64_t rows = g.getGather() ? 1 : int64_t(g.getK());
      if (rowsPerToken(g.getInput()) != rows)
        return op->emitOpError("needs an input of ")
               << rows << " row(s) per token, got one of "
               << rowsPerToken(g.getInput());
    } else if (auto c = dyn_cast<ExpertCombineOp>(op)) {
      int64_t k = width(c.getWeights());
      if (failed(checkPermutation(op, c.getPerm(), Value(), 0, k)))
        return failure();
      if (rowsPerToken(c.getInput()) != k)
        return op->emitOpError("needs the permuted batch (")
               << k << " rows per token) as input, got "
               << rowsPerToken(c.getInput()) << " row(s) per token";
    }
    return WalkResult::advance();
  });
  return failure(r.wasInterrupted());
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
    if (unnamed)
      return op.emitOpError("the ")
             << targetName << " target cannot use " << unnamed.getType()
             << " (a weight or a value it does not compute) as an activation";
    if (arenaTooLarge)
      return arenaTooLarge->emitOpError("the activation arena would need "
                                        "more than ")
             << kMaxArenaFloatsPerToken << " floats per token";
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
  ModelAttr model = getModel(module);
  if (!dir || !model)
    return module.emitError("the ")
           << targetName
           << " target needs a model imported by moe-translate "
              "(moe.weight_dir and moe.model)";
  weightDir = dir.getValue();
  // The verifier has bounded every field of #moe.model to [1, ...].
  vocab = model.getVocabSize();
  hidden = model.getHiddenSize();
  maxPositions =
      options.maxPositions > 0 ? options.maxPositions : model.getMaxPositions();
  auto func = module.lookupSymbol<func::FuncOp>("forward");
  if (!func || func.isExternal())
    return module.emitError("no func.func @forward to compile");
  if (failed(collectManifest()) || failed(verifyContract(func)) ||
      failed(emitForward(func)))
    return failure();
  // The KV caches, in bytes, as the descriptor reports them: each is at
  // most 2^58 bytes (kv_cache bounds), but their number is the IR's.
  cacheBytes = 0;
  for (const Cache &c : caches) {
    std::optional<int64_t> bytes =
        llvm::checkedMul<int64_t>(8 * c.kvHeads * c.headDim, c.capacity);
    if (bytes)
      bytes = llvm::checkedAdd(cacheBytes, *bytes);
    if (!bytes)
      return func.emitOpError("the KV caches would need more than 2^63 bytes");
    cacheBytes = *bytes;
  }
  return success();
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
    << "kv cache: " << cacheBytes << " bytes for " << maxPositions
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
