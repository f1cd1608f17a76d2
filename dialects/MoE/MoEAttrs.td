//===- MoEAttrs.td - moe dialect attributes ----------------*- tablegen -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ATTRS_TD
#define MOE_ATTRS_TD

include "mlir/IR/EnumAttr.td"

def MoE_ScoringSoftmax : I32EnumAttrCase<"Softmax", 0, "softmax">;
def MoE_ScoringSigmoid : I32EnumAttrCase<"Sigmoid", 1, "sigmoid">;

def MoE_ScoringFuncAttr : I32EnumAttr<"ScoringFunc",
    "how router logits become expert scores",
    [MoE_ScoringSoftmax, MoE_ScoringSigmoid]> {
  let cppNamespace = "::mlir::moe";
}

#endif // MOE_ATTRS_TD
