// IEEE 754 binary16 ("half", safetensors F16) and bfloat16 (BF16) <-> float conversions, torch-free, so
// checkpoints can be read and written by code that does not link LibTorch.
//
// Float -> 16-bit conversions round to nearest, ties to even (what torch's .half() and .bfloat16() do),
// overflow to infinity and keep NaNs NaN (quiet, sign kept). 16-bit -> float is exact.
// All functions are pure; safe from any thread.
#pragma once

#include <cstdint>
#include <cstring>

namespace mnemo {

namespace half_internal {
inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
}  // namespace half_internal

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return half_internal::BitsToFloat(sign | 0x7F800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return half_internal::BitsToFloat(sign);
    // Subnormal m * 2^-24: normalise so the implicit bit lands at bit 10.
    exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    return half_internal::BitsToFloat(sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13));
  }
  return half_internal::BitsToFloat(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t bits = half_internal::FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) {
    // NaN: keep the top payload bits and force the quiet bit so the result cannot become infinity.
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  }
  // 65520 = 0x477FF000 is halfway between 65504 (largest half) and 65536; ties go to the even
  // neighbour, which is 65536, i.e. infinity.
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (abs >= 0x38800000u) {  // At least 2^-14: a normal half.
    uint32_t h = (((abs >> 23) - 127 + 15) << 10) | ((abs >> 13) & 0x3FFu);
    const uint32_t rest = abs & 0x1FFFu;
    // A carry out of the mantissa correctly bumps the exponent.
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  // 2^-25 is halfway between 0 and the smallest subnormal 2^-24; the tie goes to even (zero).
  if (abs <= 0x33000000u) return sign;
  // Subnormal half m * 2^-24. The float is significand * 2^(e - 23) with e in [-25, -15], so
  // m = significand * 2^(e + 1), a right shift by 14..24 bits.
  const uint32_t significand = (abs & 0x7FFFFFu) | 0x800000u;
  const int exponent = static_cast<int>(abs >> 23) - 127;
  const int shift = -(exponent + 1);
  uint32_t m = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  // Rounding 1023 up gives 0x400, the bit pattern of the smallest normal half: also correct.
  if (rest > halfway || (rest == halfway && (m & 1u))) ++m;
  return static_cast<uint16_t>(sign | m);
}

inline float Bf16ToFloat(uint16_t b) { return half_internal::BitsToFloat(static_cast<uint32_t>(b) << 16); }

inline uint16_t FloatToBf16(float f) {
  const uint32_t bits = half_internal::FloatBits(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // Quiet NaN; truncation alone could give inf.
  }
  // Round to nearest even on the 16 dropped bits; overflow carries into the exponent and yields inf.
  const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

}  // namespace mnemo
