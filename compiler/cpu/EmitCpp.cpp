//===- EmitCpp.cpp - CPU target: moe IR to a C++ host plan ------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#include "compiler/cpu/EmitCpp.h"

#include "dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Format.h"

#include <limits>

using namespace mlir;
using namespace mlir::moe;

namespace {

std::string quoted(StringRef s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string floatLiteral(double v) {
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.9gf", v);
  return s;
}

std::string doubleLiteral(double v) {
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.17g", v);
  return s;
}

/// C++ storage type of a weight element type.
StringRef cppType(Type t) {
  if (t.isF16())
    return "moert::f16";
  if (t.isBF16())
    return "moert::bf16";
  return "float";
}

StringRef dtypeEnum(Type t) {
  if (t.isF16())
    return "MOERT_F16";
  if (t.isBF16())
    return "MOERT_BF16";
  return "MOERT_F32";
}

int64_t width(Value v) {
  return cast<RankedTensorType>(v.getType()).getDimSize(1);
}

class Emitter {
public:
  Emitter(ModuleOp module, const CpuEmitOptions &options, raw_ostream &os)
      : module(module), options(options), os(os) {}

  LogicalResult emit();

private:
  LogicalResult collectManifest();
  LogicalResult emitForward(func::FuncOp func);
  LogicalResult emitOp(Operation *op);
  /// Gives `v` its buffer in the arena (getFloatsPerToken(v) floats per
  /// batch token), at moe-plan-memory's offset where there is one.
  std::string allocate(Value v, bool ints = false);
  /// Offset of the scratch memory `op` uses while it runs.
  int64_t scratch(Operation *op);
  /// The C++ name of a weight operand; records the value when it does not
  /// come from a moe.weight, which the CPU target cannot address.
  std::string weight(Value v) {
    if (auto w = v.getDefiningOp<WeightOp>())
      return "W" + std::to_string(manifestIndex.lookup(w.getName()));
    if (!notAWeight)
      notAWeight = v;
    return "nullptr";
  }
  Value notAWeight;
  StringRef weightType(Value v) {
    return cppType(cast<RankedTensorType>(v.getType()).getElementType());
  }

  ModuleOp module;
  const CpuEmitOptions &options;
  raw_ostream &os;

  std::vector<WeightSourceOp> manifest;
  llvm::StringMap<size_t> manifestIndex;
  llvm::DenseMap<Value, std::string> names;
  Value logitsValue;
  int64_t arenaPerToken = 0;
  int64_t maxPositions = 0;
  std::string body;
  llvm::raw_string_ostream out{body};
  /// Per layer (cache argument): kv heads, head dim, capacity, window.
  struct Cache {
    int64_t kvHeads = 0, headDim = 0, capacity = 0, window = 0;
    bool seen = false;
  };
  std::vector<Cache> caches;
  int64_t layerOfCache(Value cache) {
    auto arg = dyn_cast<BlockArgument>(cache);
    return arg ? int64_t(arg.getArgNumber()) - 2 : -1;
  }
};

LogicalResult Emitter::collectManifest() {
  for (auto source : module.getOps<WeightSourceOp>()) {
    manifestIndex[source.getName()] = manifest.size();
    manifest.push_back(source);
  }
  WalkResult r = module.walk([&](WeightOp w) {
    if (!manifestIndex.count(w.getName())) {
      w.emitOpError("the CPU target needs a moe.weight_source for '")
          << w.getName() << "' (import the model with moe-translate)";
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(r.wasInterrupted());
}

std::string Emitter::allocate(Value v, bool ints) {
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

int64_t Emitter::scratch(Operation *op) {
  int64_t perToken = getScratchFloatsPerToken(op);
  int64_t offset = arenaPerToken;
  if (auto planned = op->getAttrOfType<IntegerAttr>("moe.scratch_offset"))
    offset = planned.getInt();
  arenaPerToken = std::max(arenaPerToken, offset + perToken);
  return offset;
}

LogicalResult Emitter::emitOp(Operation *op) {
  auto name = [&](Value v) { return names.lookup(v); };
  if (isa<WeightOp>(op) || isa<func::ReturnOp>(op))
    return success();
  if (auto e = dyn_cast<EmbeddingOp>(op)) {
    int64_t h = width(e.getResult());
    std::string o = allocate(e.getResult());
    out << "  moert::embedding<" << weightType(e.getTable()) << ", " << h
        << ">(" << weight(e.getTable()) << ", " << name(e.getIds()) << ", n, "
        << o << ");\n";
    return success();
  }
  if (auto r = dyn_cast<RMSNormOp>(op)) {
    int64_t h = width(r.getResult());
    std::string o = allocate(r.getResult());
    out << "  moert::rmsNorm<" << weightType(r.getWeight()) << ", " << h << ">("
        << name(r.getInput()) << ", " << weight(r.getWeight()) << ", "
        << floatLiteral(r.getEpsilon().convertToDouble()) << ", n, " << o
        << ");\n";
    return success();
  }
  if (auto l = dyn_cast<LinearOp>(op)) {
    ArrayRef<int64_t> w = l.getWeight().getType().getShape();
    std::string o = allocate(l.getResult());
    out << "  moert::linear<" << weightType(l.getWeight()) << ", " << w[0]
        << ", " << w[1] << ">(pool, " << name(l.getInput()) << ", "
        << weight(l.getWeight()) << ", n, " << o << ");\n";
    return success();
  }
  if (auto r = dyn_cast<RoPEOp>(op)) {
    int64_t w = width(r.getResult());
    std::string o = allocate(r.getResult());
    out << "  moert::rope<" << w << ", " << r.getHeadDim() << ">("
        << name(r.getInput()) << ", " << name(r.getPositions()) << ", "
        << doubleLiteral(r.getTheta().convertToDouble()) << ", n, " << o
        << ");\n";
    return success();
  }
  if (auto a = dyn_cast<AttentionOp>(op)) {
    int64_t layer = layerOfCache(a.getCache());
    if (layer < 0 || layer >= int64_t(caches.size()) || caches[layer].seen)
      return a.emitOpError("the CPU target needs each attention to read its "
                           "own cache argument of @forward");
    auto type = cast<KVCacheType>(a.getCache().getType());
    if (!type.getElementType().isF32())
      return a.emitOpError("the CPU target keeps KV caches in f32, not ")
             << type.getElementType();
    Cache &c = caches[layer];
    c.seen = true;
    c.kvHeads = type.getNumKvHeads();
    c.headDim = type.getHeadDim();
    c.window = a.getSlidingWindow().value_or(0);
    if (type.hasStaticCapacity())
      c.capacity = type.getCapacity();
    else
      c.capacity = c.window ? std::min(c.window, maxPositions) : maxPositions;
    if (c.window && c.capacity < std::min(c.window, maxPositions))
      return a.emitOpError("cache capacity ")
             << c.capacity << " is smaller than the window it must hold";
    if (!c.window && c.capacity < maxPositions)
      return a.emitOpError("cache capacity ")
             << c.capacity << " cannot hold " << maxPositions << " positions";
    names[a.getCacheOut()] = name(a.getCache());
    std::string o = allocate(a.getResult());
    out << "  moert::attention<" << a.getNumHeads() << ", " << c.kvHeads << ", "
        << c.headDim << ", " << c.capacity << ", " << c.window << ">(pool, "
        << name(a.getQuery()) << ", " << name(a.getKey()) << ", "
        << name(a.getValue()) << ", " << name(a.getCache()) << ", positions, "
        << floatLiteral(a.getEffectiveScale()) << ", n, " << o << ");\n";
    return success();
  }
  if (auto a = dyn_cast<AddOp>(op)) {
    int64_t w = width(a.getResult());
    std::string o = allocate(a.getResult());
    out << "  moert::add<" << w << ">(" << name(a.getLhs()) << ", "
        << name(a.getRhs()) << ", n, " << o << ");\n";
    return success();
  }
  if (auto r = dyn_cast<RouterOp>(op)) {
    int64_t k = r.getK();
    std::string w = allocate(r.getWeights());
    std::string i = allocate(r.getIndices(), /*ints=*/true);
    out << "  moert::router<" << r.getNumExperts() << ", " << k << ", "
        << (r.getScoring() == ScoringFunc::Softmax ? "true" : "false") << ", "
        << (r.getRenormalize() ? "true" : "false") << ">("
        << name(r.getLogits()) << ", n, " << w << ", " << i << ");\n";
    return success();
  }
  if (auto r = dyn_cast<FusedRouterOp>(op)) {
    int64_t k = r.getK();
    std::string w = allocate(r.getWeights());
    std::string i = allocate(r.getIndices(), /*ints=*/true);
    out << "  moert::fusedRouter<" << weightType(r.getGate()) << ", "
        << width(r.getInput()) << ", " << r.getNumExperts() << ", " << k << ", "
        << (r.getScoring() == ScoringFunc::Softmax ? "true" : "false") << ", "
        << (r.getRenormalize() ? "true" : "false") << ">(" << name(r.getInput())
        << ", " << weight(r.getGate()) << ", n, " << w << ", " << i << ");\n";
    return success();
  }
  if (auto e = dyn_cast<ExpertsOp>(op)) {
    int64_t h = width(e.getResult());
    ArrayRef<int64_t> gate =
        cast<RankedTensorType>(e.getGateWeights().front().getType()).getShape();
    int64_t inter = gate[0], k = width(e.getWeights());
    std::string id = std::to_string(names.size());
    SmallVector<StringRef, 3> types;
    for (auto [list, suffix] :
         {std::pair<ValueRange, StringRef>{e.getGateWeights(), "g"},
          {e.getUpWeights(), "u"},
          {e.getDownWeights(), "d"}}) {
      types.push_back(weightType(list.front()));
      out << "  const " << types.back() << " *const " << suffix << id
          << "[] = {";
      for (auto [j, v] : llvm::enumerate(list))
        out << (j ? ", " : "") << weight(v);
      out << "};\n";
    }
    out << "  float *x" << id << " = arena + n_max * " << scratch(e) << ";\n";
    std::string o = allocate(e.getResult());
    out << "  moert::experts<" << types[0] << ", " << types[1] << ", "
        << types[2] << ", " << h << ", " << inter << ", " << e.getNumExperts()
        << ", " << k << ">(pool, " << name(e.getInput()) << ", "
        << name(e.getWeights()) << ", " << name(e.getIndices()) << ", g" << id
        << ", u" << id << ", d" << id << ", n, x" << id << ", " << o << ");\n";
    return success();
  }
  if (auto p = dyn_cast<ExpertPermuteOp>(op)) {
    std::string perm = allocate(p.getPerm(), /*ints=*/true);
    std::string offsets = allocate(p.getOffsets(), /*ints=*/true);
    out << "  moert::expertPermute<" << p.getNumExperts() << ", "
        << width(p.getIndices()) << ">(" << name(p.getIndices()) << ", n, "
        << perm << ", " << offsets << ");\n";
    return success();
  }
  if (auto g = dyn_cast<GroupedMatmulOp>(op)) {
    int64_t parts = g.getParts();
    if (parts > 2)
      return g.emitOpError("the CPU target handles at most 2 parts");
    auto part = [&](int64_t i) {
      return cast<RankedTensorType>(g.getExpertWeights()[i].getType());
    };
    std::string id = std::to_string(names.size());
    out << "  const void *const gw" << id << "[] = {";
    for (auto [j, v] : llvm::enumerate(g.getExpertWeights()))
      out << (j ? ", " : "") << weight(v);
    out << "};\n";
    int64_t gatherOffset = g.getGather() ? scratch(g) : 0;
    std::string o = allocate(g.getResult());
    int64_t rowsB = parts == 2 ? part(1).getDimSize(0) : 0;
    out << "  moert::groupedMatmul<" << cppType(part(0).getElementType())
        << ", " << cppType(part(parts - 1).getElementType()) << ", "
        << part(0).getDimSize(0) << ", " << rowsB << ", " << width(g.getInput())
        << ", " << g.getNumExperts() << ", " << g.getK() << ", "
        << (g.getGather() ? "true" : "false") << ">(pool, "
        << name(g.getInput()) << ", " << name(g.getPerm()) << ", "
        << name(g.getOffsets()) << ", gw" << id << ", arena + n_max * "
        << gatherOffset << ", " << o << ");\n";
    return success();
  }
  if (auto m = dyn_cast<SiluMulOp>(op)) {
    std::string o = allocate(m.getResult());
    out << "  moert::siluMul<" << width(m.getResult()) << ">("
        << name(m.getInput()) << ", n * "
        << getFloatsPerToken(m.getResult()) / width(m.getResult()) << ", " << o
        << ");\n";
    return success();
  }
  if (auto c = dyn_cast<ExpertCombineOp>(op)) {
    std::string o = allocate(c.getResult());
    out << "  moert::expertCombine<" << width(c.getResult()) << ", "
        << width(c.getWeights()) << ">(" << name(c.getInput()) << ", "
        << name(c.getPerm()) << ", " << name(c.getWeights()) << ", n, " << o
        << ");\n";
    return success();
  }
  return op->emitOpError("is not supported by the CPU target");
}

LogicalResult Emitter::emitForward(func::FuncOp func) {
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

  // Weight pointers, typed.
  for (auto [i, source] : llvm::enumerate(manifest)) {
    StringRef t =
        cppType(cast<RankedTensorType>(source.getType()).getElementType());
    out << "  const " << t << " *W" << i << " = static_cast<const " << t
        << " *>(ex->weights[" << i << "]);\n";
  }
  for (Operation &op : entry) {
    if (failed(emitOp(&op)))
      return failure();
    if (notAWeight)
      return op.emitOpError("the CPU target needs its weights to come from "
                            "moe.weight ops");
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

LogicalResult Emitter::emit() {
  auto dir = module->getAttrOfType<StringAttr>("moe.weight_dir");
  auto model = module->getAttrOfType<DictionaryAttr>("moe.model");
  if (!dir || !model)
    return module.emitError("the CPU target needs a model imported by "
                            "moe-translate (moe.weight_dir and moe.model)");
  auto intField = [&](StringRef key) -> int64_t {
    auto a = dyn_cast_or_null<IntegerAttr>(model.get(key));
    return a ? a.getInt() : 0;
  };
  int64_t vocab = intField("vocab_size"), hidden = intField("hidden_size");
  maxPositions = options.maxPositions > 0 ? options.maxPositions
                                          : intField("max_positions");
  if (maxPositions <= 0 || vocab <= 0)
    return module.emitError("moe.model lacks vocab_size or max_positions");
  auto func = module.lookupSymbol<func::FuncOp>("forward");
  if (!func)
    return module.emitError("no func.func @forward to compile");
  if (failed(collectManifest()) || failed(emitForward(func)))
    return failure();
  int64_t layers = int64_t(caches.size());

  os << "// Generated by moe-compile (CPU target) for model '"
     << options.modelName << "'. Do not edit.\n"
     << "#include \"moert/kernels.h\"\n\n"
     << "namespace {\n\n"
     << "const moert_weight_desc kWeights[] = {\n";
  for (WeightSourceOp s : manifest) {
    auto t = cast<RankedTensorType>(s.getType());
    os << "  {" << quoted(s.getName()) << ", " << quoted(s.getFile()) << ", "
       << s.getOffset() << "ull, " << s.getSizeInBytes() << "ull, "
       << dtypeEnum(t.getElementType()) << ", " << t.getDimSize(0) << ", "
       << (t.getRank() > 1 ? t.getDimSize(1) : 1) << "},\n";
  }
  os << "};\n\nconst moert_cache_desc kCaches[] = {\n";
  int64_t cacheFloats = 0;
  for (const Cache &c : caches) {
    os << "  {" << c.kvHeads << ", " << c.headDim << ", " << c.capacity << ", "
       << c.window << "},\n";
    cacheFloats += 2 * c.kvHeads * c.capacity * c.headDim;
  }
  os << "};\n\n"
     << "int64_t scratchFloats(int64_t n_max) { return n_max * "
     << arenaPerToken << "; }\n\n"
     << "void forward(const moert_exec *ex, int64_t n, const int32_t *tokens,\n"
     << "             const int32_t *positions, float *logits) {\n"
     << "  moert_pool *pool = ex->pool;\n"
     << "  float *arena = ex->scratch;\n"
     << "  const int64_t n_max = ex->max_tokens;\n"
     << body << "}\n\n";

  std::string plan;
  llvm::raw_string_ostream p(plan);
  p << "model: " << options.modelName << " (" << layers << " layers, hidden "
    << hidden << ", vocab " << vocab << ")\n"
    << "weights: " << manifest.size() << " tensors in " << dir.getValue()
    << "\n"
    << "activation arena: " << arenaPerToken
    << " floats per token of the batch\n"
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
     << "  MOERT_ABI_VERSION, " << quoted(options.modelName) << ", "
     << quoted(dir.getValue()) << ",\n"
     << "  " << vocab << ", " << hidden << ", " << layers << ", "
     << maxPositions << ",\n"
     << "  " << manifest.size() << ", kWeights, kCaches, scratchFloats, "
     << "forward,\n"
     << "  " << quoted(plan) << "};\n";
  return success();
}

} // namespace

LogicalResult mlir::moe::emitCpuProgram(ModuleOp module,
                                        const CpuEmitOptions &options,
                                        raw_ostream &os) {
  return Emitter(module, options, os).emit();
}
