// RUN: moe-opt %s --split-input-file --verify-diagnostics

func.func @zero_factor(%w: tensor<?x2xf32>, %i: tensor<?x2xi32>) -> tensor<?x2xi32> {
  // expected-error @+1 {{'moe.expert_capacity' op factor must be a finite number above 0, got 0}}
  %kw, %ki = moe.expert_capacity %w, %i experts 4 factor 0.0 : tensor<?x2xf32>, tensor<?x2xi32>
  return %ki : tensor<?x2xi32>
}

// -----

func.func @nan_factor(%w: tensor<?x2xf32>, %i: tensor<?x2xi32>) -> tensor<?x2xi32> {
  // expected-error @+1 {{'moe.expert_capacity' op factor must be a finite number above 0, got nan}}
  %kw, %ki = moe.expert_capacity %w, %i experts 4 factor 0x7FF8000000000000 : tensor<?x2xf32>, tensor<?x2xi32>
  return %ki : tensor<?x2xi32>
}

// -----

func.func @shapes(%w: tensor<?x3xf32>, %i: tensor<?x2xi32>) -> tensor<?x2xi32> {
  // expected-error @+1 {{'moe.expert_capacity' op weights 'tensor<?x3xf32>' and indices 'tensor<?x2xi32>' must have one shape, [tokens, k]}}
  %kw, %ki = moe.expert_capacity %w, %i experts 4 factor 1.0 : tensor<?x3xf32>, tensor<?x2xi32>
  return %ki : tensor<?x2xi32>
}

// -----

func.func @k_above_experts(%w: tensor<?x4xf32>, %i: tensor<?x4xi32>) -> tensor<?x4xi32> {
  // expected-error @+1 {{'moe.expert_capacity' op each token chooses 4 experts but there are only 3}}
  %kw, %ki = moe.expert_capacity %w, %i experts 3 factor 1.0 : tensor<?x4xf32>, tensor<?x4xi32>
  return %ki : tensor<?x4xi32>
}

// -----

func.func @dynamic_k(%w: tensor<?x?xf32>, %i: tensor<?x?xi32>) -> tensor<?x?xi32> {
  // expected-error @+1 {{'moe.expert_capacity' op k (dim 1 of the indices) must be static}}
  %kw, %ki = moe.expert_capacity %w, %i experts 3 factor 1.0 : tensor<?x?xf32>, tensor<?x?xi32>
  return %ki : tensor<?x?xi32>
}

// -----

func.func @bank_of_other_size(%b: tensor<?x64xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>) -> tensor<?x64xf32> {
  %kw, %ki = moe.expert_capacity %w, %i experts 3 factor 1.0 : tensor<?x2xf32>, tensor<?x2xi32>
  %g = moe.weight "w1" : tensor<96x64xf32>
  %u = moe.weight "w3" : tensor<96x64xf32>
  %d = moe.weight "w2" : tensor<64x96xf32>
  // expected-error @+1 {{'moe.experts' op capacity is for 3 experts but the bank has 2}}
  %y = moe.experts %b, %kw, %ki
      gate [%g, %g] : tensor<96x64xf32> up [%u, %u] : tensor<96x64xf32>
      down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return %y : tensor<?x64xf32>
}

// -----

func.func @weights_elsewhere(%b: tensor<?x64xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>) -> tensor<?x64xf32> {
  %kw, %ki = moe.expert_capacity %w, %i experts 2 factor 1.0 : tensor<?x2xf32>, tensor<?x2xi32>
  %g = moe.weight "w1" : tensor<96x64xf32>
  %u = moe.weight "w3" : tensor<96x64xf32>
  %d = moe.weight "w2" : tensor<64x96xf32>
  // expected-error @+1 {{'moe.experts' op weights and indices must come from the same moe.expert_capacity}}
  %y = moe.experts %b, %w, %ki
      gate [%g, %g] : tensor<96x64xf32> up [%u, %u] : tensor<96x64xf32>
      down [%d, %d] : tensor<64x96xf32>
      : tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>
  return %y : tensor<?x64xf32>
}

// -----

func.func @router_of_other_size(%l: tensor<?x4xf32>) -> tensor<?x2xi32> {
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x4xf32>
  // expected-error @+1 {{'moe.expert_capacity' op router chooses among 4 experts but the capacity is for 100000000}}
  %kw, %ki = moe.expert_capacity %w, %i experts 100000000 factor 1.0 : tensor<?x2xf32>, tensor<?x2xi32>
  return %ki : tensor<?x2xi32>
}

// -----

func.func @weights_of_other_router(%l: tensor<?x4xf32>, %w2: tensor<?x2xf32>) -> tensor<?x2xi32> {
  %w, %i = moe.router %l top 2 softmax renormalize : tensor<?x4xf32>
  // expected-error @+1 {{'moe.expert_capacity' op weights and indices must come from the same router}}
  %kw, %ki = moe.expert_capacity %w2, %i experts 4 factor 1.0 : tensor<?x2xf32>, tensor<?x2xi32>
  return %ki : tensor<?x2xi32>
}
