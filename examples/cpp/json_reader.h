// json_reader.h: a small JSON reader, enough for manifest.json (objects, arrays, strings with
// every escape, \u escapes and surrogate pairs as UTF-8, numbers, true/false/null). A document
// that is not valid JSON throws JsonError naming what and the byte where.
#pragma once

#include <cctype>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  double number = 0;
  std::string text;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* get(const std::string& key) const {
    for (const auto& member : members)
      if (member.first == key) return &member.second;
    return nullptr;
  }
  std::string string_at(const std::string& key, const std::string& otherwise = "") const {
    const Json* found = get(key);
    return found && found->kind == String ? found->text : otherwise;
  }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : text_(text) {}

  Json document() {
    Json value = read(0);
    skip();
    if (at_ != text_.size()) bad("text after the document");
    return value;
  }

 private:
  [[noreturn]] void bad(const std::string& what) {
    throw JsonError("not valid JSON (" + what + " at byte " + std::to_string(at_) + ")");
  }
  void skip() {
    while (at_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[at_]))) ++at_;
  }
  bool take(char c) {
    skip();
    if (at_ < text_.size() && text_[at_] == c) return ++at_, true;
    return false;
  }
  void expect(char c) {
    if (!take(c)) bad(std::string("expected '") + c + "'");
  }
  unsigned hex4() {
    if (at_ + 4 > text_.size()) bad("short \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[at_++];
      if (!std::isxdigit(static_cast<unsigned char>(c))) bad("bad \\u escape");
      code = code * 16 + static_cast<unsigned>(std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return code;
  }
  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xc0 | code >> 6);
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xe0 | code >> 12);
      out += static_cast<char>(0x80 | (code >> 6 & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | code >> 18);
      out += static_cast<char>(0x80 | (code >> 12 & 0x3f));
      out += static_cast<char>(0x80 | (code >> 6 & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    }
  }
  unsigned code_point() {  // after "\u": one escape, or a surrogate pair of two
    unsigned code = hex4();
    if (code >= 0xd800 && code < 0xdc00) {
      if (text_.compare(at_, 2, "\\u") != 0) bad("a lone surrogate");
      at_ += 2;
      const unsigned low = hex4();
      if (low < 0xdc00 || low >= 0xe000) bad("a lone surrogate");
      code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
    } else if (code >= 0xdc00 && code < 0xe000) {
      bad("a lone surrogate");
    }
    return code;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (at_ < text_.size() && text_[at_] != '"') {
      char c = text_[at_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) bad("unfinished escape");
      switch (char e = text_[at_++]) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': append_utf8(out, code_point()); break;
        default: out += e;
      }
    }
    expect('"');
    return out;
  }
  Json read(int depth) {
    if (depth > 64) bad("nesting too deep");
    skip();
    if (at_ >= text_.size()) bad("unexpected end");
    Json value;
    char c = text_[at_];
    if (c == '{') {
      ++at_;
      value.kind = Json::Object;
      if (take('}')) return value;
      do {
        skip();
        std::string key = string();
        expect(':');
        value.members.emplace_back(key, read(depth + 1));
      } while (take(','));
      expect('}');
    } else if (c == '[') {
      ++at_;
      value.kind = Json::Array;
      if (take(']')) return value;
      do value.items.push_back(read(depth + 1));
      while (take(','));
      expect(']');
    } else if (c == '"') {
      value.kind = Json::String;
      value.text = string();
    } else if (text_.compare(at_, 4, "true") == 0 || text_.compare(at_, 5, "false") == 0) {
      value.kind = Json::Bool;
      value.boolean = c == 't';
      at_ += value.boolean ? 4 : 5;
    } else if (text_.compare(at_, 4, "null") == 0) {
      at_ += 4;
    } else {
      const char* start = text_.c_str() + at_;
      char* end = nullptr;
      value.number = std::strtod(start, &end);
      if (end == start) bad("unexpected character");
      value.kind = Json::Number;
      at_ += static_cast<std::size_t>(end - start);
    }
    return value;
  }

  const std::string& text_;
  std::size_t at_ = 0;
};
