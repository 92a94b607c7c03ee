// numpy_random.h: numpy.random.default_rng(seed).random(n, dtype=np.float32), bit for bit.
//
// The uniforms runtime.Sampler(seed=S) draws (its generator is numpy's default_rng(S)), so that
// one --seed gives the C++ example the tokens the Python runtime samples. A port of numpy's
//   numpy/random/bit_generator.pyx  SeedSequence: the seed int as uint32 words (lowest first),
//                                   mix_entropy into a pool of 4 words, generate_state(4, uint64)
//   numpy/random/_pcg64.pyx         PCG64(seed_seq): pcg64_set_seed(state words 0-1, inc words 2-3)
//   numpy/random/src/pcg64/pcg64.h  PCG XSL RR 128/64 (step, then output) and pcg64_next32, which
//                                   returns a 64-bit draw's lower half and keeps its upper half
//   numpy/random/src/distributions  next_float = (next_uint32 >> 8) * (1.0f / 16777216.0f)
// Needs a compiler with unsigned __int128 (gcc, clang).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace numpy_random {

__extension__ typedef unsigned __int128 u128;  // gcc and clang

// SeedSequence's constants (bit_generator.pyx).
constexpr uint32_t INIT_A = 0x43b0d7e5u, MULT_A = 0x931e8875u, INIT_B = 0x8b51f9ddu, MULT_B = 0x58f38dedu;
constexpr uint32_t MIX_MULT_L = 0xca01f9ddu, MIX_MULT_R = 0x4973f715u, XSHIFT = 16;
constexpr int POOL_SIZE = 4;

inline uint32_t hashmix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= MULT_A;
  value *= hash_const;
  return value ^ (value >> XSHIFT);
}

inline uint32_t mix(uint32_t x, uint32_t y) {
  const uint32_t result = MIX_MULT_L * x - MIX_MULT_R * y;
  return result ^ (result >> XSHIFT);
}

// _int_to_uint32_array: 0 is one word 0; otherwise the words lowest first, no leading zero words.
inline std::vector<uint32_t> seed_words(uint64_t seed) {
  std::vector<uint32_t> words;
  if (seed == 0) words.push_back(0);
  for (; seed > 0; seed >>= 32) words.push_back(static_cast<uint32_t>(seed & 0xffffffffu));
  return words;
}

// SeedSequence(entropy).pool: mix_entropy with no spawn key.
inline std::vector<uint32_t> seed_pool(const std::vector<uint32_t>& entropy) {
  std::vector<uint32_t> pool(POOL_SIZE);
  uint32_t hash_const = INIT_A;
  for (std::size_t i = 0; i < pool.size(); ++i) pool[i] = hashmix(i < entropy.size() ? entropy[i] : 0u, hash_const);
  for (std::size_t src = 0; src < pool.size(); ++src)
    for (std::size_t dst = 0; dst < pool.size(); ++dst)
      if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src], hash_const));
  for (std::size_t src = pool.size(); src < entropy.size(); ++src)
    for (std::size_t dst = 0; dst < pool.size(); ++dst) pool[dst] = mix(pool[dst], hashmix(entropy[src], hash_const));
  return pool;
}

// SeedSequence.generate_state(n_words, np.uint64): 2 * n_words uint32 words, paired little-endian.
inline std::vector<uint64_t> generate_state64(const std::vector<uint32_t>& pool, std::size_t n_words) {
  std::vector<uint32_t> words(2 * n_words);
  uint32_t hash_const = INIT_B;
  for (std::size_t i = 0; i < words.size(); ++i) {
    uint32_t value = pool[i % pool.size()] ^ hash_const;
    hash_const *= MULT_B;
    value *= hash_const;
    words[i] = value ^ (value >> XSHIFT);
  }
  std::vector<uint64_t> out(n_words);
  for (std::size_t i = 0; i < n_words; ++i) out[i] = static_cast<uint64_t>(words[2 * i]) | uint64_t{words[2 * i + 1]} << 32;
  return out;
}

// PCG64 as numpy seeds and runs it, with numpy's 32-bit buffering.
class Pcg64 {
 public:
  explicit Pcg64(uint64_t seed) {
    const std::vector<uint64_t> words = generate_state64(seed_pool(seed_words(seed)), 4);
    const u128 initstate = u128{words[0]} << 64 | words[1], initseq = u128{words[2]} << 64 | words[3];
    state_ = 0;  // pcg_setseq_128_srandom_r
    inc_ = initseq << 1 | 1;
    step();
    state_ += initstate;
    step();
  }

  uint64_t next64() {  // pcg_setseq_128_xsl_rr_64_random_r: step, then output the new state
    step();
    const uint64_t folded = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
    const unsigned rot = static_cast<unsigned>(state_ >> 122);
    return (folded >> rot) | (folded << ((-rot) & 63u));
  }

  uint32_t next32() {  // pcg64_next32
    if (has_uint32_) {
      has_uint32_ = false;
      return uinteger_;
    }
    const uint64_t next = next64();
    has_uint32_ = true;
    uinteger_ = static_cast<uint32_t>(next >> 32);
    return static_cast<uint32_t>(next & 0xffffffffu);
  }

  float next_float() { return static_cast<float>(next32() >> 8) * (1.0f / 16777216.0f); }

 private:
  void step() { state_ = state_ * MULTIPLIER + inc_; }

  static constexpr u128 MULTIPLIER = u128{2549297995355413924ULL} << 64 | 4865540595714422341ULL;
  u128 state_ = 0, inc_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

// numpy.random.default_rng(seed).random(n, dtype=np.float32).
inline std::vector<float> uniforms(uint64_t seed, long n) {
  Pcg64 generator(seed);
  std::vector<float> out(static_cast<std::size_t>(n > 0 ? n : 0));
  for (float& u : out) u = generator.next_float();
  return out;
}

}  // namespace numpy_random
