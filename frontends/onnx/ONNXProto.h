//===- ONNXProto.h - the ONNX messages the importer reads -------*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// A reader of the protobuf wire format for the ONNX messages (onnx.proto,
// field numbers of onnx 1.19; unknown fields are skipped) that the importer
// uses, with the generated classes' accessor names. It depends on LLVM
// Support only, so the fuzzer builds it.
//
// Why not libprotobuf and Debian's onnx_proto: moe-compile also links
// libsentencepiece, which carries its own copy of protobuf-lite 3.14 with
// exported symbols; with libprotobuf 3.21 in the same process one of the two
// aborts at start-up or on use (whichever's symbols win). Reading the
// few messages here avoids the clash, and bounds what a hostile file can
// make us allocate: at most kMaxElements decoded elements, no recursion
// beyond the fixed nesting of the messages read (subgraphs are skipped).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_ONNX_ONNXPROTO_H
#define MOE_FRONTENDS_ONNX_ONNXPROTO_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::moe::onnxfe::wire {

/// Most elements (messages, strings, numbers) decoded from one file.
constexpr uint64_t kMaxElements = uint64_t(1) << 22;

struct StringStringEntryProto {
  std::string key_, value_;
  const std::string &key() const { return key_; }
  const std::string &value() const { return value_; }
};

struct TensorProto {
  enum DataType : int32_t {
    UNDEFINED = 0,
    FLOAT = 1,
    INT32 = 6,
    INT64 = 7,
    FLOAT16 = 10,
    DOUBLE = 11,
    BFLOAT16 = 16
  };
  enum DataLocation : int32_t { DEFAULT = 0, EXTERNAL = 1 };
  std::vector<int64_t> dims_;
  int32_t data_type_ = 0;
  std::string name_;
  bool hasRawData = false;
  std::string raw_data_;
  std::vector<float> float_data_;
  std::vector<int64_t> int64_data_;
  std::vector<StringStringEntryProto> external_data_;
  int32_t data_location_ = DEFAULT;

  const std::string &name() const { return name_; }
  int32_t data_type() const { return data_type_; }
  const std::vector<int64_t> &dims() const { return dims_; }
  int dims_size() const { return int(dims_.size()); }
  int64_t dims(int i) const { return dims_[i]; }
  int32_t data_location() const { return data_location_; }
  const std::vector<StringStringEntryProto> &external_data() const {
    return external_data_;
  }
  bool has_raw_data() const { return hasRawData; }
  const std::string &raw_data() const { return raw_data_; }
  int float_data_size() const { return int(float_data_.size()); }
  const std::vector<float> &float_data() const { return float_data_; }
  const std::vector<int64_t> &int64_data() const { return int64_data_; }
};

struct AttributeProto {
  enum AttributeType : int32_t {
    UNDEFINED = 0,
    FLOAT = 1,
    INT = 2,
    STRING = 3,
    TENSOR = 4,
    GRAPH = 5,
    FLOATS = 6,
    INTS = 7,
    STRINGS = 8
  };
  std::string name_, s_;
  int32_t type_ = UNDEFINED;
  float f_ = 0;
  int64_t i_ = 0;
  TensorProto t_;
  std::vector<int64_t> ints_;

  const std::string &name() const { return name_; }
  int32_t type() const { return type_; }
  float f() const { return f_; }
  int64_t i() const { return i_; }
  const std::string &s() const { return s_; }
  const TensorProto &t() const { return t_; }
  int ints_size() const { return int(ints_.size()); }
  int64_t ints(int k) const { return ints_[k]; }
};

struct NodeProto {
  std::vector<std::string> input_, output_;
  std::string name_, op_type_, domain_;
  std::vector<AttributeProto> attribute_;

  const std::vector<std::string> &input() const { return input_; }
  /// Input or output `i`, "" (absent) past the end: patterns look at
  /// positions a hostile node may not have.
  const std::string &input(int i) const {
    return i >= 0 && size_t(i) < input_.size() ? input_[i] : empty();
  }
  int input_size() const { return int(input_.size()); }
  const std::vector<std::string> &output() const { return output_; }
  const std::string &output(int i) const {
    return i >= 0 && size_t(i) < output_.size() ? output_[i] : empty();
  }
  int output_size() const { return int(output_.size()); }
  const std::string &name() const { return name_; }
  const std::string &op_type() const { return op_type_; }
  const std::string &domain() const { return domain_; }
  const std::vector<AttributeProto> &attribute() const { return attribute_; }
  int attribute_size() const { return int(attribute_.size()); }

private:
  static const std::string &empty() {
    static const std::string none;
    return none;
  }
};

struct ValueInfoProto {
  std::string name_;
  const std::string &name() const { return name_; }
};

struct GraphProto {
  std::vector<NodeProto> node_;
  std::vector<TensorProto> initializer_;
  int sparseInitializers = 0;
  std::vector<ValueInfoProto> input_, output_;

  const std::vector<NodeProto> &node() const { return node_; }
  const NodeProto &node(int i) const { return node_[i]; }
  int node_size() const { return int(node_.size()); }
  const std::vector<TensorProto> &initializer() const { return initializer_; }
  int sparse_initializer_size() const { return sparseInitializers; }
  int output_size() const { return int(output_.size()); }
  const ValueInfoProto &output(int i) const { return output_[i]; }
};

struct OperatorSetIdProto {
  std::string domain_;
  int64_t version_ = 0;
  const std::string &domain() const { return domain_; }
  int64_t version() const { return version_; }
};

struct ModelProto {
  int64_t ir_version_ = 0;
  std::vector<OperatorSetIdProto> opset_import_;
  bool hasGraph = false;
  GraphProto graph_;

  int64_t ir_version() const { return ir_version_; }
  const std::vector<OperatorSetIdProto> &opset_import() const {
    return opset_import_;
  }
  bool has_graph() const { return hasGraph; }
  const GraphProto &graph() const { return graph_; }
};

/// Parses `bytes` as a ModelProto; the error says what is malformed and at
/// which byte offset.
llvm::Error parseModel(llvm::StringRef bytes, ModelProto &model);

} // namespace mlir::moe::onnxfe::wire

#endif // MOE_FRONTENDS_ONNX_ONNXPROTO_H
