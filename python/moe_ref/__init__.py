"""moe_ref: test models and the numpy reference forward pass of moe-compile.

Modules:
  safetensors  -- read/write the safetensors format (numpy only)
  configs      -- presets and config.json for MixtralForCausalLM
  generate     -- deterministic HF-style model directories (CLI: python3 -m moe_ref.generate)
  reference    -- the reference forward pass, DESIGN.md section 4 (the oracle)
  quant        -- the q8_0, q4_0 and q4_1 block formats (llama.cpp's), numpy
"""
