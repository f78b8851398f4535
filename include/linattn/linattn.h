/* The C API of linattn: the C++ API of linattn/ops.hpp for C, FFI and engine callers.
 *
 * Valid C99 and C++. Every entry point that can fail returns a linattn_status and, on failure,
 * records a message readable with linattn_last_error(); no C++ exception crosses this boundary.
 *
 * Memory: every linattn_tensor is a non-owning view of caller-owned memory. linattn never
 * allocates, frees or keeps a pointer to a tensor after a call returns; outputs are written
 * into views the caller allocated (linattn_output_shapes says what to allocate).
 *
 * Layout follows flash-linear-attention (fla): q, k [B, T, H, K]; v [B, T, HV, V]; scalar gates
 * g, beta [B, T, HV]; per-channel gate gk [B, T, HV, K]; dplr_delta_rule's low-rank transition
 * a, b [B, T, H, K]; states [N, HV, K, V], where N is B, or
 * the number of sequences when cu_seqlens is given (then B must be 1). Decays are log-space
 * (g, gk <= 0) and beta is in [0, 2]. See docs/ and ops.hpp for the math of each op.
 *
 * Minimal use:
 *   linattn_args a;
 *   linattn_args_init(&a);
 *   a.q = linattn_tensor_contiguous(q, LINATTN_DTYPE_F32, 4, q_shape);  (k, v, gates likewise)
 *   int64_t o_shape[4];
 *   linattn_output_shapes(LINATTN_OP_GLA, &a, o_shape, NULL);
 *   linattn_tensor o = linattn_tensor_contiguous(o_buf, LINATTN_DTYPE_F32, 4, o_shape);
 *   if (linattn_forward(LINATTN_OP_GLA, LINATTN_FORM_REFERENCE, &a, &o, NULL) != LINATTN_OK)
 *     fprintf(stderr, "%s\n", linattn_last_error());
 */
#ifndef LINATTN_LINATTN_H_
#define LINATTN_LINATTN_H_

#include <stdint.h>

#ifdef __cplusplus
/* In C++ the enums get a fixed 32-bit underlying type, so that any int32 value (e.g. an op id
 * read from a file) is a valid enum value there too and the C API can reject it with a message
 * instead of it being undefined behaviour. C enums are int-sized on every supported ABI. */
#define LINATTN_ENUM(name) enum name : int32_t
#define LINATTN_NOEXCEPT noexcept
extern "C" {
#else
#define LINATTN_ENUM(name) enum name
#define LINATTN_NOEXCEPT
#endif

/* Largest tensor rank a linattn_tensor can describe (linattn::kMaxDims). */
#define LINATTN_MAX_DIMS 6

typedef LINATTN_ENUM(linattn_status){
    LINATTN_OK = 0,
    LINATTN_ERROR_INVALID_ARGUMENT = 1, /* bad input: null pointer, shape, dtype, range, id */
    LINATTN_ERROR_NOT_IMPLEMENTED = 2,  /* the (op, form, pass) has no implementation yet */
    LINATTN_ERROR_OUT_OF_MEMORY = 3,    /* a workspace allocation failed */
    LINATTN_ERROR_INTERNAL = 4,         /* a bug in linattn: please report the message */
} linattn_status;

/* Element types; values equal linattn::DType. bf16 is a storage type (computed in fp32). */
typedef LINATTN_ENUM(linattn_dtype){
    LINATTN_DTYPE_F32 = 0,
    LINATTN_DTYPE_BF16 = 1,
    LINATTN_DTYPE_F64 = 2,
    LINATTN_DTYPE_I32 = 3, /* cu_seqlens only */
    LINATTN_DTYPE_I64 = 4, /* cu_seqlens only */
} linattn_dtype;

/* Sequence mixers; values equal linattn::Op, names are fla's (linattn_op_name). */
typedef LINATTN_ENUM(linattn_op){
    LINATTN_OP_LINEAR_ATTN = 0,      /* S_t = S_{t-1} + k v^T */
    LINATTN_OP_SIMPLE_GLA = 1,       /* S_t = exp(g_t) S_{t-1} + k v^T, g required */
    LINATTN_OP_GLA = 2,              /* S_t = diag(exp(gk_t)) S_{t-1} + k v^T, gk required */
    LINATTN_OP_DELTA_RULE = 3,       /* S_t = (I - b k k^T) S_{t-1} + b k v^T, beta required */
    LINATTN_OP_GATED_DELTA_RULE = 4, /* S_t = exp(g_t)(I - b k k^T) S_{t-1} + b k v^T */
    LINATTN_OP_DELTA_PRODUCT = 5,    /* num_householder delta steps per token, optional g */
    LINATTN_OP_RETENTION = 6,        /* S_t = gamma_h S_{t-1} + k v^T, gamma_h = 1 - 2^(-5-h) */
    LINATTN_OP_NONCAUSAL_LINEAR_ATTN = 7, /* o_t = scale q_t^T sum_s k_s v_s^T over the whole
                                             sequence; no state; fast form = CHUNK */
    LINATTN_OP_KDA = 8, /* S_t = (I - b k k^T) diag(exp(gk_t)) S_{t-1} + b k v^T (Kimi Delta
                           Attention; fla's g is gk here), gk and beta required */
    LINATTN_OP_DPLR_DELTA_RULE = 9,  /* S_t = diag(exp(gk_t)) S_{t-1} + b_t (S_{t-1}^T a_t)^T
                                        + k_t v_t^T (RWKV-7); a, b, gk required */
} linattn_op;

/* How an op is computed; values equal linattn::Form. */
typedef LINATTN_ENUM(linattn_form){
    LINATTN_FORM_REFERENCE = 0, /* fp64 token-by-token oracle */
    LINATTN_FORM_CHUNK = 1,     /* chunk-parallel: prefill and training */
    LINATTN_FORM_RECURRENT = 2, /* fused recurrent: decode */
} linattn_form;

/* A non-owning view: data pointer, dtype (a linattn_dtype), rank, shape and strides in
 * elements (not bytes). ndim == 0 means "argument not given" (an all-zero struct is that).
 * Only the first ndim entries of shape and strides are read. */
typedef struct linattn_tensor {
  void* data;
  int32_t dtype;
  int32_t ndim;
  int64_t shape[LINATTN_MAX_DIMS];
  int64_t strides[LINATTN_MAX_DIMS];
} linattn_tensor;

/* The inputs of one op call, mirroring linattn::OpArgs (fla's argument names). Always start
 * from linattn_args_init(): tensors not given stay ndim == 0, and the defaults matter. */
typedef struct linattn_args {
  linattn_tensor q, k, v;       /* q [B,T,H,K]; k [B,T*n_h,H,K]; v [B,T*n_h,HV,V] */
  linattn_tensor g;             /* scalar log decay [B,T,HV], <= 0 */
  linattn_tensor gk;            /* per-key-channel log decay [B,T,HV,K], <= 0 */
  linattn_tensor beta;          /* delta step [B,T*n_h,HV], in [0, 2] */
  linattn_tensor initial_state; /* [N,HV,K,V] */
  linattn_tensor cu_seqlens;    /* [N+1] int32/int64 token offsets; requires B == 1 */
  double scale;                 /* NaN (the default) means K^-0.5 */
  int32_t output_final_state;   /* nonzero: write final_state in linattn_forward */
  int32_t normalize;            /* linear_attn, noncausal_linear_attn: fla's normalize */
  int32_t use_qk_l2norm_in_kernel; /* delta family: L2-normalise q and k rows first */
  int32_t num_householder;      /* delta_product: n_h >= 1; 1 for every other op */
  linattn_tensor a, b;          /* dplr_delta_rule: low-rank transition [B,T,H,K], dtype of q */
} linattn_args;

/* Gradients, mirroring linattn::OpGrads: a view with ndim == 0 is not computed; a given view
 * must have the shape of its input (which must have been given), be contiguous and floating. */
typedef struct linattn_grads {
  linattn_tensor dq, dk, dv, dg, dgk, dbeta, dinitial_state;
  linattn_tensor da, db;
} linattn_grads;

/* Sets every tensor to "not given", every flag to 0, scale to NaN (the default K^-0.5) and
 * num_householder to 1. Does nothing if args is NULL. */
void linattn_args_init(linattn_args* args) LINATTN_NOEXCEPT;

/* A row-major contiguous view of `data` with the given dtype and the ndim sizes in `shape`
 * (copied; the caller keeps ownership of both `data` and `shape`). Cannot fail: if ndim is
 * outside [0, LINATTN_MAX_DIMS] or shape is NULL, the view keeps that ndim with zero sizes, and
 * any call that uses it reports the problem. */
linattn_tensor linattn_tensor_contiguous(void* data, linattn_dtype dtype, int32_t ndim,
                                         const int64_t* shape) LINATTN_NOEXCEPT;

/* Validates the inputs in *args for `op` and writes the shapes to allocate: o_shape gets
 * [B, T, HV, V] (o has the dtype of v); final_state_shape, which may be NULL, gets
 * [N, HV, K, V] when args->output_final_state is set and zeros otherwise. */
linattn_status linattn_output_shapes(linattn_op op, const linattn_args* args, int64_t o_shape[4],
                                     int64_t final_state_shape[4]) LINATTN_NOEXCEPT;

/* Runs the forward pass of one form of `op` on *args. *o (required) must be a contiguous view
 * of shape [B, T, HV, V] with the dtype of v. final_state may be NULL; it is required (f32 or
 * f64, contiguous, [N, HV, K, V]) exactly when args->output_final_state is set.
 * Returns LINATTN_ERROR_NOT_IMPLEMENTED when that form has no forward implementation (see
 * linattn_has_form), before looking at the inputs. */
linattn_status linattn_forward(linattn_op op, linattn_form form, const linattn_args* args,
                               linattn_tensor* o, linattn_tensor* final_state) LINATTN_NOEXCEPT;

/* Runs the backward pass of one form of `op`: given the same *args as the forward and the
 * upstream gradient *d_o (required, [B, T, HV, V]) and optionally *dfinal_state (may be NULL,
 * [N, HV, K, V]), writes each gradient view given in *grads (required). Returns
 * LINATTN_ERROR_NOT_IMPLEMENTED when that form has no backward implementation. */
linattn_status linattn_backward(linattn_op op, linattn_form form, const linattn_args* args,
                                const linattn_tensor* d_o, const linattn_tensor* dfinal_state,
                                linattn_grads* grads) LINATTN_NOEXCEPT;

/* Looks up an op by its name ("gla", "gated_delta_rule", ...) and writes it to *op. */
linattn_status linattn_op_from_name(const char* name, linattn_op* op) LINATTN_NOEXCEPT;

/* The name of an op (a static string), or NULL for an unknown op id (with linattn_last_error
 * set). */
const char* linattn_op_name(linattn_op op) LINATTN_NOEXCEPT;

/* 1 if the form of the op has an implementation of the forward (backward == 0) or backward
 * (backward != 0) pass, else 0. Unknown op or form ids give 0 with linattn_last_error set. */
int linattn_has_form(linattn_op op, linattn_form form, int backward) LINATTN_NOEXCEPT;

/* ---- Causal depthwise conv1d (linattn/conv1d.hpp; fla's causal_conv1d) ----
 * x [B, T, D], weight [D, W], optional bias [D] and residual [B, T, D] (added after the
 * activation), states [N, D, W] (the last W inputs of each sequence, oldest first). A
 * zero-initialised struct means: nothing given, no final state, no activation. */
typedef LINATTN_ENUM(linattn_activation){
    LINATTN_ACTIVATION_NONE = 0,
    LINATTN_ACTIVATION_SILU = 1, /* fla's "silu" / "swish" */
} linattn_activation;

typedef struct linattn_conv1d_args {
  linattn_tensor x, weight, bias, residual, initial_state, cu_seqlens;
  int32_t output_final_state; /* nonzero: write final_state [N, D, W] */
  int32_t activation;         /* a linattn_activation */
} linattn_conv1d_args;

typedef struct linattn_conv1d_grads {
  linattn_tensor dx, dweight, dbias, dresidual, dinitial_state; /* ndim == 0: not computed */
} linattn_conv1d_grads;

/* form: LINATTN_FORM_REFERENCE (fp64 oracle) or LINATTN_FORM_CHUNK (fast). *y (required) has
 * x's shape and dtype, contiguous; final_state (NULL unless output_final_state) [N, D, W]. */
linattn_status linattn_causal_conv1d_forward(linattn_form form, const linattn_conv1d_args* args,
                                             linattn_tensor* y,
                                             linattn_tensor* final_state) LINATTN_NOEXCEPT;
/* dy (required) [B, T, D]; dfinal_state may be NULL; each gradient given in *grads is written. */
linattn_status linattn_causal_conv1d_backward(linattn_form form, const linattn_conv1d_args* args,
                                              const linattn_tensor* dy,
                                              const linattn_tensor* dfinal_state,
                                              linattn_conv1d_grads* grads) LINATTN_NOEXCEPT;
/* One decode step (fla's causal_conv1d_update): x [N, D]; cache [N, D, W] shifted in place;
 * bias and residual ([N, D]) may be NULL; y [N, D] contiguous with x's dtype. */
linattn_status linattn_causal_conv1d_update(const linattn_tensor* x, linattn_tensor* cache,
                                            const linattn_tensor* weight,
                                            const linattn_tensor* bias,
                                            const linattn_tensor* residual, int32_t activation,
                                            linattn_tensor* y) LINATTN_NOEXCEPT;

/* ---- Selective scan (linattn/scan.hpp; mamba_ssm's selective_scan_fn) ----
 * Token-major views (any strides): u, delta, z [B, T, D]; A [D, N]; B, C [B, T, G, N]; D,
 * delta_bias [D]; states [N_seq, D, N]. A zero-initialised struct means nothing optional given. */
typedef struct linattn_scan_args {
  linattn_tensor u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens;
  int32_t delta_softplus;     /* nonzero: Δ = softplus(delta + delta_bias) */
  int32_t output_final_state; /* nonzero: write final_state [N_seq, D, N] (f32 or f64) */
} linattn_scan_args;

typedef struct linattn_scan_grads {
  linattn_tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state; /* ndim 0: skip */
} linattn_scan_grads;

/* form: LINATTN_FORM_REFERENCE or LINATTN_FORM_CHUNK. *y (required) [B, T, D] contiguous with
 * u's dtype; final_state NULL unless output_final_state. */
linattn_status linattn_selective_scan_forward(linattn_form form, const linattn_scan_args* args,
                                              linattn_tensor* y,
                                              linattn_tensor* final_state) LINATTN_NOEXCEPT;
linattn_status linattn_selective_scan_backward(linattn_form form, const linattn_scan_args* args,
                                               const linattn_tensor* dy,
                                               const linattn_tensor* dfinal_state,
                                               linattn_scan_grads* grads) LINATTN_NOEXCEPT;

/* One decode step (mamba's selective_state_update): state [N, D, N_state] in place; x, dt, z
 * [N, D]; B, C [N, G, N_state]; y [N, D] contiguous with x's dtype. */
typedef struct linattn_scan_step_args {
  linattn_tensor state, x, dt, A, B, C, D, z, dt_bias;
  int32_t dt_softplus;
} linattn_scan_step_args;
linattn_status linattn_selective_state_update(const linattn_scan_step_args* args,
                                              linattn_tensor* y) LINATTN_NOEXCEPT;

/* The message of the last failed linattn call on this thread (thread-local). Every call that
 * can fail resets it to "" when it succeeds. The string is owned by linattn and stays valid
 * until the next linattn call on this thread; never NULL. */
const char* linattn_last_error(void) LINATTN_NOEXCEPT;

/* The library version "major.minor.patch" (a static string). */
const char* linattn_version(void) LINATTN_NOEXCEPT;

/* ---- Softmax attention (linattn/attention.hpp; algorithms.md §4.11): causal, optional sliding
 * window, GQA (H % Hkv == 0), cu_seqlens. Forms: REFERENCE (fp64 oracle), CHUNK (tiled
 * flash-style forward/backward), RECURRENT (decode against a KV cache). */
typedef struct linattn_attention_args {
  linattn_tensor q, k, v;    /* [B,T,H,K], [B,T,Hkv,K], [B,T,Hkv,V] */
  linattn_tensor cu_seqlens; /* [N+1] int32/int64 token offsets; requires B == 1 */
  double scale;              /* NaN (the default) means K^-0.5 */
  int64_t window_size;       /* 0: full causal; W >= 1: token i reads keys [i-W+1, i] */
} linattn_attention_args;

/* Sets every tensor to "not given", scale to NaN and window_size to 0. Nothing if args is NULL. */
void linattn_attention_args_init(linattn_attention_args* args) LINATTN_NOEXCEPT;

/* Writes *o ([B,T,H,V], dtype of v, contiguous; required) and, when lse is not NULL, *lse
 * ([B,T,H] float32/float64: the log-sum-exp of each query's logits, needed by the backward). */
linattn_status linattn_attention_forward(linattn_form form, const linattn_attention_args* args,
                                         linattn_tensor* o, linattn_tensor* lse) LINATTN_NOEXCEPT;

/* Writes each of *dq, *dk, *dv that is not NULL and given, for the upstream gradient *d_o. The
 * CHUNK form needs the forward's *o and *lse; REFERENCE ignores them (they may be NULL). */
linattn_status linattn_attention_backward(linattn_form form, const linattn_attention_args* args,
                                          const linattn_tensor* o, const linattn_tensor* lse,
                                          const linattn_tensor* d_o, linattn_tensor* dq,
                                          linattn_tensor* dk, linattn_tensor* dv) LINATTN_NOEXCEPT;

/* Decode step: q [N,Tq,H,K] are the newest Tq tokens of each sequence, already written to the
 * caches k_cache [N,S,Hkv,K] and v_cache [N,S,Hkv,V], which hold cache_seqlens[n] valid rows
 * (Tq <= cache_seqlens[n] <= S); query t sits at position cache_seqlens[n] - Tq + t. */
typedef struct linattn_kvcache_args {
  linattn_tensor q, k_cache, v_cache, cache_seqlens;
  double scale;
  int64_t window_size;
} linattn_kvcache_args;

void linattn_kvcache_args_init(linattn_kvcache_args* args) LINATTN_NOEXCEPT;

/* REFERENCE or RECURRENT; writes *o [N,Tq,H,V] (dtype of v_cache, contiguous). */
linattn_status linattn_attention_decode(linattn_form form, const linattn_kvcache_args* args,
                                        linattn_tensor* o) LINATTN_NOEXCEPT;

/* ---- Local Linear Attention (linattn/lla.hpp; docs/design.md): an op with its own arguments.
 * Causal; q [B, Tq, H, K], k [B, T, H, K], v [B, T, H, V] with Tq <= T (the queries are the last
 * Tq positions: Tq = 1 is one decode step against a KV cache). Forms: REFERENCE (fp64, direct
 * solve), CHUNK (blockwise, conjugate gradients; forward and backward), RECURRENT (decode:
 * each query alone; forward only). Defaults (linattn_lla_args_init) are the authors'. */
typedef struct linattn_lla_args {
  linattn_tensor q, k, v;
  double ridge_lambda;                   /* lambda > 0 of every query (default 10) ... */
  linattn_tensor ridge_lambda_per_token; /* ... unless this [B, Tq, H] tensor (> 0) is given */
  linattn_tensor cu_seqlens;             /* [N+1] int32/int64; B == 1 and Tq == T */
  double scale;                          /* NaN (default): K^-0.5 */
  double delta_eps;                      /* delta += delta_eps sign(delta); default 1e-12 */
  double cg_atol, cg_rtol;               /* CG stops at ||r||^2 <= rtol max(atol, ||r0||^2); 1e-12 */
  int32_t cg_max_iters;                  /* default 32 */
  int32_t cg_use_preconditioner;         /* nonzero: Jacobi; default 0 */
  int32_t direct_solve;                  /* nonzero: Cholesky per query instead of CG; default 0 */
} linattn_lla_args;

/* Gradients; a view with ndim == 0 is not computed. Each given view must have its input's
 * shape, be contiguous and floating; dridge_lambda_per_token needs ridge_lambda_per_token. */
typedef struct linattn_lla_grads {
  linattn_tensor dq, dk, dv, dridge_lambda_per_token;
} linattn_lla_grads;

/* Every tensor not given, and the defaults above. Does nothing if args is NULL. */
void linattn_lla_args_init(linattn_lla_args* args) LINATTN_NOEXCEPT;

/* Writes o (contiguous [B, Tq, H, V], the dtype of v). */
linattn_status linattn_lla_forward(linattn_form form, const linattn_lla_args* args,
                                   linattn_tensor* o) LINATTN_NOEXCEPT;

/* Writes the gradients given in *grads for the upstream gradient *d_o ([B, Tq, H, V]).
 * LINATTN_ERROR_NOT_IMPLEMENTED for the RECURRENT form. */
linattn_status linattn_lla_backward(linattn_form form, const linattn_lla_args* args,
                                    const linattn_tensor* d_o,
                                    linattn_lla_grads* grads) LINATTN_NOEXCEPT;

#ifdef __cplusplus
} /* extern "C" */
#endif

#undef LINATTN_ENUM
#undef LINATTN_NOEXCEPT

#endif /* LINATTN_LINATTN_H_ */
