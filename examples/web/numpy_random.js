// numpy's default generator in JavaScript: `defaultRng(seed).random(n)` gives the float32 values of
// `numpy.random.default_rng(seed).random(n, dtype=np.float32)`, bit for bit, so that a seed drawn
// here gives the tokens the Python runtime's `runtime.Sampler(..., seed=seed)` draws. Shared by the
// browser page (app.js) and the Node example (examples/node/generate.js imports this file).
//
// The steps, as numpy 1.17+ takes them (numpy/random/bit_generator.pyx, _pcg64.pyx, pcg64.h,
// distributions.c):
// 1. SeedSequence(seed): the seed, a whole number >= 0, as 32-bit words lowest first ([0] for 0),
//    hashed into a pool of 4 words (hashmix, mix: O'Neill's seed_seq constants);
// 2. generate_state(4, uint64): 8 words from the pool, read as 4 little-endian 64-bit words;
// 3. PCG64: a 128-bit LCG, state = words 0,1 (high, low), increment = (words 2,3 << 1) | 1, seeded
//    as pcg_setseq_128_srandom_r (state 0, step, add, step); each 64-bit draw steps then outputs
//    XSL-RR (rotate (high ^ low) right by high >> 58);
// 4. next_uint32: the low half of a 64-bit draw, then its high half on the next call (buffered);
// 5. a float32 in [0, 1): (next_uint32 >> 8) * 2**-24.

const MASK32 = 0xffffffffn;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;
const POOL_SIZE = 4;
const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;
const XSHIFT = 16;
const PCG_MULTIPLIER = (2549297995355413924n << 64n) + 4865540595714422341n;
const FLOAT_UNIT = 2 ** -24;

// A seed as numpy takes it: a whole number >= 0 (a safe-integer Number, a BigInt or its decimal text).
export function checkedSeed(seed) {
  let value;
  if (typeof seed === "bigint") value = seed;
  else if (typeof seed === "number" && Number.isSafeInteger(seed)) value = BigInt(seed);
  else if (typeof seed === "string" && /^\s*[0-9]+\s*$/.test(seed)) value = BigInt(seed.trim());
  else throw new Error(`the seed must be a whole number >= 0, got ${JSON.stringify(String(seed))}`);
  if (value < 0n) throw new Error(`the seed must be a whole number >= 0, got ${value}`);
  return value;
}

// numpy's _int_to_uint32_array: 32-bit words, lowest first; [0] for 0.
function seedWords(seed) {
  const words = [];
  for (let n = seed; n > 0n; n >>= 32n) words.push(Number(n & MASK32));
  return words.length ? words : [0];
}

// SeedSequence(seed).pool: mix_entropy over the seed's words (no spawn key).
function seedPool(words) {
  let hashConst = INIT_A;
  const hashmix = (value) => {
    value = (value ^ hashConst) >>> 0;
    hashConst = Math.imul(hashConst, MULT_A) >>> 0;
    value = Math.imul(value, hashConst) >>> 0;
    return (value ^ (value >>> XSHIFT)) >>> 0;
  };
  const mix = (x, y) => {
    const result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
    return (result ^ (result >>> XSHIFT)) >>> 0;
  };
  const pool = new Array(POOL_SIZE);
  for (let i = 0; i < POOL_SIZE; i++) pool[i] = hashmix(i < words.length ? words[i] : 0);
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
  }
  for (let src = POOL_SIZE; src < words.length; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(words[src]));
  }
  return pool;
}

// SeedSequence.generate_state(n64, uint64): n64 64-bit words as BigInt.
function generateState(pool, n64) {
  let hashConst = INIT_B;
  const words32 = [];
  for (let i = 0; i < 2 * n64; i++) {
    let value = (pool[i % pool.length] ^ hashConst) >>> 0;
    hashConst = Math.imul(hashConst, MULT_B) >>> 0;
    value = Math.imul(value, hashConst) >>> 0;
    words32.push((value ^ (value >>> XSHIFT)) >>> 0);
  }
  const words64 = [];
  for (let i = 0; i < n64; i++) words64.push(BigInt(words32[2 * i]) | (BigInt(words32[2 * i + 1]) << 32n));
  return words64;
}

// numpy.random.default_rng(seed): PCG64 seeded through SeedSequence, its float32 draws.
export class NumpyGenerator {
  constructor(seed) {
    const [s0, s1, i0, i1] = generateState(seedPool(seedWords(checkedSeed(seed))), 4);
    this.increment = ((((i0 << 64n) | i1) << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + ((s0 << 64n) | s1)) & MASK128;
    this.step();
    this.hasUint32 = false;
    this.uinteger = 0;
  }

  step() {
    this.state = (this.state * PCG_MULTIPLIER + this.increment) & MASK128;
  }

  // PCG64's next 64-bit draw (XSL-RR of the stepped state), a BigInt.
  next64() {
    this.step();
    const high = this.state >> 64n;
    const xored = (high ^ this.state) & MASK64;
    const rotation = high >> 58n;
    return ((xored >> rotation) | (xored << ((64n - rotation) & 63n))) & MASK64;
  }

  next32() {
    if (this.hasUint32) {
      this.hasUint32 = false;
      return this.uinteger;
    }
    const next = this.next64();
    this.hasUint32 = true;
    this.uinteger = Number(next >> 32n);
    return Number(next & MASK32);
  }

  // The next n float32 values in [0, 1), as `Generator.random(n, dtype=np.float32)`.
  random(n) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.next32() >>> 8) * FLOAT_UNIT;
    return out;
  }
}

export function defaultRng(seed) {
  return new NumpyGenerator(seed);
}
