/* Compiled as strict C99 (-std=c99 -Wpedantic -Werror): proves linattn.h is valid C, links
 * from C, and that the basics behave. Exit code 0 on success. */
#include <math.h>
#include <stdio.h>

#include "linattn/linattn.h"

int main(void) {
  linattn_args args;
  const int64_t shape[4] = {1, 2, 1, 3};
  float data[6] = {0};
  linattn_tensor t;
  linattn_op op;

  linattn_args_init(&args);
  if (!isnan(args.scale) || args.num_householder != 1 || args.q.ndim != 0) {
    fprintf(stderr, "linattn_args_init: unexpected defaults\n");
    return 1;
  }
  t = linattn_tensor_contiguous(data, LINATTN_DTYPE_F32, 4, shape);
  if (t.ndim != 4 || t.strides[0] != 6 || t.strides[3] != 1) {
    fprintf(stderr, "linattn_tensor_contiguous: unexpected strides\n");
    return 1;
  }
  if (linattn_op_from_name("gla", &op) != LINATTN_OK || op != LINATTN_OP_GLA) {
    fprintf(stderr, "linattn_op_from_name: %s\n", linattn_last_error());
    return 1;
  }
  printf("linattn %s from C\n", linattn_version());
  return 0;
}
