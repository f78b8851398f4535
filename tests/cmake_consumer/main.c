/* A tiny forward through the C API of an installed linattn: linear attention over B=1, T=4,
 * H=1, K=2, V=3; prints the output norm. Exit code 0 when the call succeeds and the output is
 * finite and nonzero. */
#include <math.h>
#include <stdio.h>

#include <linattn/linattn.h>

int main(void) {
  enum { T = 4, K = 2, V = 3 };
  const int64_t qk_shape[4] = {1, T, 1, K};
  const int64_t v_shape[4] = {1, T, 1, V};
  float q[T * K], k[T * K], v[T * V], o[T * V];
  int64_t o_shape[4];
  linattn_args args;
  linattn_tensor o_view;
  double norm = 0.0;
  int i;

  for (i = 0; i < T * K; ++i) {
    q[i] = (float)sin(0.5 * i);
    k[i] = (float)cos(0.3 * i);
  }
  for (i = 0; i < T * V; ++i) v[i] = (float)(i % 5) - 2.0f;

  linattn_args_init(&args);
  args.q = linattn_tensor_contiguous(q, LINATTN_DTYPE_F32, 4, qk_shape);
  args.k = linattn_tensor_contiguous(k, LINATTN_DTYPE_F32, 4, qk_shape);
  args.v = linattn_tensor_contiguous(v, LINATTN_DTYPE_F32, 4, v_shape);
  if (linattn_output_shapes(LINATTN_OP_LINEAR_ATTN, &args, o_shape, NULL) != LINATTN_OK) {
    fprintf(stderr, "linattn_output_shapes: %s\n", linattn_last_error());
    return 1;
  }
  o_view = linattn_tensor_contiguous(o, LINATTN_DTYPE_F32, 4, o_shape);
  if (linattn_forward(LINATTN_OP_LINEAR_ATTN, LINATTN_FORM_REFERENCE, &args, &o_view, NULL) !=
      LINATTN_OK) {
    fprintf(stderr, "linattn_forward: %s\n", linattn_last_error());
    return 1;
  }
  for (i = 0; i < T * V; ++i) norm += (double)o[i] * o[i];
  norm = sqrt(norm);
  printf("linattn %s: linear_attn output norm %.6f\n", linattn_version(), norm);
  return isfinite(norm) && norm > 0.0 ? 0 : 1;
}
