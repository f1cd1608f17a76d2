// RUN: moe-opt %s --split-input-file --verify-diagnostics

func.func @no_rank(%i: tensor<?x2xi32>) -> tensor<2x0xi32> {
  // expected-error @+1 {{'moe.ep_exchange_counts' op ranks must be at least 1, got 0}}
  %c = moe.ep_exchange_counts %i ranks 0 first_expert [0] : tensor<?x2xi32> -> tensor<2x0xi32>
  return %c : tensor<2x0xi32>
}

// -----

func.func @empty_rank(%i: tensor<?x2xi32>) -> tensor<2x3xi32> {
  // expected-error @+1 {{'moe.ep_exchange_counts' op rank 1 holds no expert (first_expert [0, 2, 2, 4]): every rank must hold at least one expert}}
  %c = moe.ep_exchange_counts %i ranks 3 first_expert [0, 2, 2, 4] : tensor<?x2xi32> -> tensor<2x3xi32>
  return %c : tensor<2x3xi32>
}

// -----

func.func @counts_type(%i: tensor<?x2xi32>) -> tensor<2x3xi32> {
  // expected-error @+1 {{'moe.ep_exchange_counts' op counts must be tensor<2x2xi32> (sent and received per rank), got 'tensor<2x3xi32>'}}
  %c = moe.ep_exchange_counts %i ranks 2 first_expert [0, 1, 2] : tensor<?x2xi32> -> tensor<2x3xi32>
  return %c : tensor<2x3xi32>
}

// -----

func.func @more_ranks_than_experts(%r: tensor<?x64xf32>, %e: tensor<?xi32>, %g: tensor<?xf32>, %i: tensor<?x2xi32>) -> tensor<?x64xf32> {
  %c = moe.ep_exchange_counts %i ranks 3 first_expert [0, 1, 2, 3] : tensor<?x2xi32> -> tensor<2x3xi32>
  %g0 = moe.weight "e0.w1" : tensor<96x64xf32>
  %g1 = moe.weight "e1.w1" : tensor<96x64xf32>
  %d0 = moe.weight "e0.w2" : tensor<64x96xf32>
  %d1 = moe.weight "e1.w2" : tensor<64x96xf32>
  // expected-error @+1 {{'moe.ep_experts' op first_expert [0, 1, 2, 3] must end at the number of experts, 2}}
  %y = moe.ep_experts %r, %e, %g, %c gate [%g0, %g1] up [%g0, %g1] down [%d0, %d1] first_expert [0, 1, 2, 3] : tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>, tensor<2x3xi32>, (tensor<96x64xf32>, tensor<96x64xf32>), (tensor<96x64xf32>, tensor<96x64xf32>), (tensor<64x96xf32>, tensor<64x96xf32>) -> tensor<?x64xf32>
  return %y : tensor<?x64xf32>
}

// -----

func.func @counts_not_exchanged(%x: tensor<?x64xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %c: tensor<2x2xi32>) -> tensor<?x64xf32> {
  // expected-error @+1 {{'moe.ep_dispatch' op counts must come from moe.ep_exchange_counts}}
  %r, %e, %g = moe.ep_dispatch %x, %i, %w, %c : tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x2xf32>, tensor<2x2xi32> -> tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>
  return %r : tensor<?x64xf32>
}
