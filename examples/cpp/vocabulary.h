// vocabulary.h: text in and out for a folder whose manifest.json has a "vocabulary" (one string
// per token id), as runtime.Vocabulary does it: encode is the greedy longest match over the
// tokens from the start of the text (UTF-8 bytes here; tokens are whole UTF-8 strings, so a
// match ends where a character ends), decode concatenates. Errors throw std::invalid_argument.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

class Vocabulary {
 public:
  Vocabulary() = default;
  explicit Vocabulary(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {
    for (const std::string& token : tokens_)
      if (token.empty()) throw std::invalid_argument("the vocabulary holds an empty string");
  }

  bool empty() const { return tokens_.empty(); }
  long size() const { return static_cast<long>(tokens_.size()); }
  const std::string& token(long id) const { return tokens_.at(static_cast<std::size_t>(id)); }

  // The ids of text: at each position the longest token it starts with.
  std::vector<long> encode(const std::string& text) const {
    std::vector<long> ids;
    for (std::size_t at = 0; at < text.size();) {
      long best = -1;
      for (long id = 0; id < size(); ++id) {
        const std::string& candidate = token(id);
        if ((best < 0 || candidate.size() > token(best).size()) && text.compare(at, candidate.size(), candidate) == 0)
          best = id;
      }
      if (best < 0)
        throw std::invalid_argument("position " + std::to_string(characters(text.substr(0, at))) + " (" +
                                    quoted(text.substr(at, character_bytes(text, at))) +
                                    ") is no token of the vocabulary");
      ids.push_back(best);
      at += token(best).size();
    }
    return ids;
  }

  std::string decode(const std::vector<long>& ids) const {
    std::string text;
    for (long id : ids) text += token(id);
    return text;
  }

  // A CSV field (RFC 4180): always quoted, a quote doubled; a newline stays inside the quotes.
  static std::string csv_field(const std::string& text) {
    std::string out = "\"";
    for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
  }

 private:
  static std::size_t characters(const std::string& text) {  // UTF-8 characters: bytes that start one
    std::size_t n = 0;
    for (char c : text) n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
    return n;
  }
  static std::size_t character_bytes(const std::string& text, std::size_t at) {
    std::size_t n = 1;
    while (at + n < text.size() && (static_cast<unsigned char>(text[at + n]) & 0xc0) == 0x80) ++n;
    return n;
  }
  static std::string quoted(const std::string& text) { return "'" + text + "'"; }

  std::vector<std::string> tokens_;
};
