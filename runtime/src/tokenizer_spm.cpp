//===- tokenizer_spm.cpp - SentencePiece models in the runtime --*- C++ -*-===//
//
// Part of moe-compile.
//
//===----------------------------------------------------------------------===//
//
// A tokenizer blob of kind SentencePiece runs through Debian's
// libsentencepiece. This file is its own library (libmoert_spm), linked
// (with -lsentencepiece) only into programs whose tokenizer needs it:
// tokenizer.cpp calls moert::loadSentencePiece through a weak reference.
//
//===----------------------------------------------------------------------===//

#include "tokenizer.h"

#include <sentencepiece_processor.h>

namespace moert {

namespace {

//===----------------------------------------------------------------------===//
// SentencePiece
//===----------------------------------------------------------------------===//

class SpmTokenizer : public Tokenizer {
public:
  bool parse(const std::string &proto, int64_t vocabSize, std::string &error) {
    auto status = sp.LoadFromSerializedProto(proto);
    if (!status.ok()) {
      error = "libsentencepiece cannot load the model: " + status.ToString();
      return false;
    }
    if (sp.GetPieceSize() > vocabSize) {
      error = "the SentencePiece model has " +
              std::to_string(sp.GetPieceSize()) + " pieces, more than the " +
              std::to_string(vocabSize) + " of the model's vocabulary";
      return false;
    }
    return true;
  }
  bool encode(const std::string &text, bool addSpecial,
              std::vector<int32_t> &ids, std::string &error) const override {
    ids.clear();
    if (!isValidUtf8(text)) {
      error = "the text is not valid UTF-8";
      return false;
    }
    std::vector<int> out;
    auto status = sp.Encode(text, &out);
    if (!status.ok()) {
      error = "libsentencepiece: " + status.ToString();
      return false;
    }
    if (addSpecial && addBosFlag && bosId >= 0)
      ids.push_back(bosId);
    ids.insert(ids.end(), out.begin(), out.end());
    return true;
  }
  std::string decode(const std::vector<int32_t> &ids,
                     bool skipSpecial) const override {
    std::vector<int> in;
    for (int32_t id : ids)
      if (id >= 0 && id < sp.GetPieceSize() &&
          !(skipSpecial && sp.IsControl(id)))
        in.push_back(id);
    std::string text;
    if (!sp.Decode(in, &text).ok())
      return "";
    return text;
  }
  bool closes(int32_t id, bool) const override {
    return id >= 0 && id < sp.GetPieceSize() && !sp.IsByte(id) &&
           !sp.IsControl(id);
  }
  int64_t size() const override { return sp.GetPieceSize(); }

private:
  sentencepiece::SentencePieceProcessor sp;
};

} // namespace

bool loadSentencePiece(const std::string &proto, int64_t vocabSize,
                       std::unique_ptr<Tokenizer> &out, std::string &error) {
  auto spm = std::make_unique<SpmTokenizer>();
  if (!spm->parse(proto, vocabSize, error))
    return false;
  out = std::move(spm);
  return true;
}

} // namespace moert
