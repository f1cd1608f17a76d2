// RUN: moe-opt %s --split-input-file --verify-diagnostics --pass-pipeline='builtin.module(func.func(moe-estimate-cost))'

// moe-estimate-cost costs only what the ops report through
// WeightCostOpInterface: a moe.weight that reaches an op without it is an
// error naming the op and the weight, never a silent zero.

func.func @returned() -> tensor<4x8xf32> {
  %w = moe.weight "w" : tensor<4x8xf32>
  // expected-error @below {{'func.return' op uses moe.weight 'w' but does not implement WeightCostOpInterface, so moe-estimate-cost cannot cost it}}
  return %w : tensor<4x8xf32>
}

// -----

// An f32 weight is a valid activation, so it may feed ops that do not read
// weights; moe.add cannot say what that costs.
func.func @added(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %w = moe.weight "bias" : tensor<4x8xf32>
  // expected-error @below {{'moe.add' op uses moe.weight 'bias' but does not implement WeightCostOpInterface, so moe-estimate-cost cannot cost it}}
  %y = moe.add %x, %w : tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// The router takes logits, not a weight: a gate weight fed to it directly
// (instead of through moe.linear) is not costed as one.
func.func @router_on_weight() -> (tensor<4x2xf32>, tensor<4x2xi32>) {
  %w = moe.weight "gate" : tensor<4x8xf32>
  // expected-error @below {{'moe.router' op uses moe.weight 'gate' but does not implement WeightCostOpInterface, so moe-estimate-cost cannot cost it}}
  %r, %i = moe.router %w top 2 softmax renormalize : tensor<4x8xf32>
  return %r, %i : tensor<4x2xf32>, tensor<4x2xi32>
}
