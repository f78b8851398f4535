// exp(x) v for x <= 0, the decay of the selective scan's state (algorithms.md §4.10 (a)),
// accurate at both ends: near x = 0 as v + expm1(x) v (exp(x) itself would be rounded to a
// multiple of 2^-24 below 1, a systematic error of up to 5% in 1 - a at a decay of 1e-6 that
// grows with the sequence length), elsewhere as exp(x) v (expm1 would lose a small exp(x)).
// One exponential either way: Highway's Exp and Expm1 share the range reduction and the
// polynomial, which is expm1 of the reduced argument. Included once per SIMD target, inside
// HWY_NAMESPACE, by chunk_fwd.cpp and chunk_bwd.cpp (no include guard, as Highway's -inl.h).

// The decay factor of one argument x, to be applied to several values: a time chunk's local
// and true chains (chunk.hpp) share one exponential.
template <class D>
struct Decay {
  hn::Vec<D> em1, a;
  hn::Mask<D> near;  // |x| < log(2)/2, where em1 = expm1(x)

  HWY_INLINE Decay(D d, hn::Vec<D> x) {
    hn::impl::ExpImpl<float> impl;
    // q = round(x / log 2) (x <= 0): as hn::Exp
    const auto q = impl.ToInt32(d, hn::MulAdd(x, hn::Set(d, 1.442695040888963407359924681f),
                                              hn::Or(hn::Set(d, 0.5f), hn::And(x, hn::Set(d, -0.0f)))));
    em1 = impl.ExpPoly(d, impl.ExpReduce(d, x, q));  // expm1(x - q log 2)
    a = hn::IfThenElseZero(hn::Ge(x, hn::Set(d, -104.0f)), impl.LoadExpShortRange(d, hn::Add(em1, hn::Set(d, 1.0f)), q));
    near = hn::Lt(hn::Abs(x), hn::Set(d, 0.346573590279972654708616f));
  }
  HWY_INLINE hn::Vec<D> operator()(hn::Vec<D> v) const {
    return hn::IfThenElse(near, hn::MulAdd(em1, v, v), hn::Mul(a, v));
  }
};

template <class D, class V>
HWY_INLINE V Decayed(D d, V x, V v) {
  return Decay<D>(d, x)(v);
}
