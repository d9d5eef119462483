#pragma once
/// \file
/// Multi-head attention: the fp32 warp-per-query kernel, the tensor-core FlashAttention-2-style kernel for bf16 /
/// fp16, the split-key kernel of decoding steps, and attention(), which picks one.

#include "common.cuh"

#include <type_traits>

namespace qformer::cuda_kernels {

// ---------------------------------------------------------------------------------------------------------------
// Attention. Both kernels take q / out rows (B * Lq, H * dh) and k / v rows where batch row b's keys start at row
// b * key_batch_rows (= Lk for plain attention, the cache capacity for a KV cache), and both read the key and
// value tiles into shared memory with tile_loader: 16-byte vectors where the head's columns allow it, 32-bit
// index arithmetic (64-bit division would cost more than the arithmetic of the tile).

namespace detail {

/// Loads rows [0, n) of one head (columns [0, dh) of `src`, rows `stride` apart) into a (tile_rows, ld) shared
/// tile of Dst, zero-filling rows >= n and columns [dh, width). Vector path: 8 x 2-byte or 4 x 4-byte elements
/// per load when `vector_ok` (dh a multiple of the vector, src and stride aligned to 16 bytes, Src == Dst).
/// Each thread issues up to eight loads before its first store, so their latencies overlap.
template <class Dst, class Src>
__device__ __forceinline__ void load_tile(Dst* tile, int ld, const Src* src, index stride, int n, int tile_rows, int dh, int width,
                                          bool vector_ok) {
  constexpr int in_flight = 8;
  if constexpr (sizeof(Dst) == sizeof(Src)) {
    if (vector_ok) {
      constexpr int per = 16 / sizeof(Src);
      const int chunks = width / per, total = tile_rows * chunks;  // width a multiple of per (dp or dh)
      for (int base = threadIdx.x; base < total; base += in_flight * blockDim.x) {
        uint4 value[in_flight];
#pragma unroll
        for (int u = 0; u < in_flight; ++u) {
          const int c = base + u * blockDim.x, r = c / chunks, col = (c - r * chunks) * per;
          value[u] = make_uint4(0, 0, 0, 0);
          if (c < total && r < n && col < dh) value[u] = *reinterpret_cast<const uint4*>(src + r * stride + col);
        }
#pragma unroll
        for (int u = 0; u < in_flight; ++u) {
          const int c = base + u * blockDim.x, r = c / chunks, col = (c - r * chunks) * per;
          if (c < total) *reinterpret_cast<uint4*>(tile + r * ld + col) = value[u];
        }
      }
      return;
    }
  }
  const int total = tile_rows * width;
  for (int base = threadIdx.x; base < total; base += in_flight * blockDim.x) {
    float value[in_flight];
#pragma unroll
    for (int u = 0; u < in_flight; ++u) {
      const int e = base + u * blockDim.x, r = e / width, col = e - r * width;
      value[u] = (e < total && r < n && col < dh) ? to_float(src[r * stride + col]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < in_flight; ++u) {
      const int e = base + u * blockDim.x, r = e / width, col = e - r * width;
      if (e < total) tile[r * ld + col] = from_float<Dst>(value[u]);
    }
  }
}

/// Whether 16-byte loads of a head's columns are aligned for these matrices.
template <class T>
bool vector_loads(index head_dim, std::initializer_list<const matrix<const T>*> ms) {
  constexpr index per = 16 / sizeof(T);
  if (head_dim % per) return false;
  for (const matrix<const T>* m : ms)
    if (reinterpret_cast<std::uintptr_t>(m->data) % 16 || m->stride % per) return false;
  return true;
}

__device__ __forceinline__ const float* mask_row_of(const mask_arg& mask, index b, index h, index i, index keys) {
  if (!mask.data) return nullptr;
  return mask.data + (((mask.batch == 1 ? 0 : b) * mask.heads + (mask.heads == 1 ? 0 : h)) * mask.queries +
                      (mask.queries == 1 ? 0 : i)) * keys;
}

constexpr int attention_warps = 8, attention_key_tile = 32, attention_max_head_dim = 128;

inline std::size_t attention_shared_bytes(index head_dim) {
  // keys (tile, dh + 1) padded against bank conflicts, values (tile, dh), queries (warps, dh), p (warps, tile)
  return sizeof(float) * static_cast<std::size_t>(attention_key_tile * (2 * head_dim + 1) + attention_warps * head_dim +
                                                  attention_warps * attention_key_tile);
}
}  // namespace detail

// attention_kernel (fp32, and 16-bit types before sm_80): one warp per query row, eight rows per block sharing
// tiles of 32 keys and values (converted to float) in shared memory; softmax online over the key tiles (running
// max m, running sum l, output rescaled by exp(m_old - m_new)). Lane j scores key j of the tile; lanes then split
// the head dimension to accumulate p_j v_j. Arithmetic in float throughout, as the CPU backend.
template <class S, int Chunks /* ceil(head_dim / 32) */>
__global__ void attention_kernel(matrix<const S> q, matrix<const S> k, matrix<const S> v, mask_arg mask, index queries,
                                 index keys, index key_batch_rows, int head_dim, float scale, matrix<S> out) {
  extern __shared__ float shared[];
  constexpr int tile = detail::attention_key_tile;
  const int dh = head_dim;
  const index b = blockIdx.z, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const index i = static_cast<index>(blockIdx.x) * detail::attention_warps + warp;
  const bool active = i < queries;
  float* k_tile = shared;                         // (tile, dh + 1)
  float* v_tile = k_tile + tile * (dh + 1);       // (tile, dh)
  float* q_row = v_tile + tile * dh + warp * dh;  // (dh) of this warp
  float* p = v_tile + tile * dh + detail::attention_warps * dh + warp * tile;

  if (active) {
    const S* qi = q.data + (b * queries + i) * q.stride + h * dh;
    for (int d = lane; d < dh; d += 32) q_row[d] = detail::to_float(qi[d]);
  }
  const float* mask_row = active ? detail::mask_row_of(mask, b, h, i, keys) : nullptr;
  const S* k_head = k.data + b * key_batch_rows * k.stride + h * dh;
  const S* v_head = v.data + b * key_batch_rows * v.stride + h * dh;

  float running_max = -INFINITY, running_sum = 0.0f, acc[Chunks];
#pragma unroll
  for (int c = 0; c < Chunks; ++c) acc[c] = 0.0f;

  for (index k0 = 0; k0 < keys; k0 += tile) {
    const int n = keys - k0 < tile ? static_cast<int>(keys - k0) : tile;
    __syncthreads();  // the previous tile is no longer read
    detail::load_tile<float>(k_tile, dh + 1, k_head + k0 * k.stride, k.stride, n, n, dh, dh, false);
    detail::load_tile<float>(v_tile, dh, v_head + k0 * v.stride, v.stride, n, n, dh, dh, false);
    __syncthreads();
    if (!active) continue;
    float score = -INFINITY;
    if (lane < n) {
      const float* kj = k_tile + lane * (dh + 1);
      float partial[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // four independent chains
      int d = 0;
      for (; d + 4 <= dh; d += 4)
#pragma unroll
        for (int u = 0; u < 4; ++u) partial[u] += q_row[d + u] * kj[d + u];
      for (; d < dh; ++d) partial[0] += q_row[d] * kj[d];
      score = ((partial[0] + partial[1]) + (partial[2] + partial[3])) * scale + (mask_row ? mask_row[k0 + lane] : 0.0f);
    }
    const float new_max = fmaxf(running_max, detail::warp_max(score));
    // exp(-inf - -inf) would be NaN: with every score so far -inf (impossible with finite masks) keep zeros.
    const float correction = running_max == -INFINITY ? 0.0f : __expf(running_max - new_max);
    const float pj = lane < n ? expf(score - new_max) : 0.0f;
    running_sum = running_sum * correction + detail::warp_sum(pj);
    running_max = new_max;
    p[lane] = pj;
    __syncwarp();
#pragma unroll
    for (int c = 0; c < Chunks; ++c) acc[c] *= correction;
    for (int j = 0; j < n; ++j) {
      const float w = p[j];
#pragma unroll
      for (int c = 0; c < Chunks; ++c) {
        const int d = lane + 32 * c;
        if (d < dh) acc[c] += w * v_tile[j * dh + d];
      }
    }
    __syncwarp();
  }
  if (!active) return;
  const float inv = 1.0f / running_sum;
  S* oi = out.data + (b * queries + i) * out.stride + h * dh;
#pragma unroll
  for (int c = 0; c < Chunks; ++c) {
    const int d = lane + 32 * c;
    if (d < dh) oi[d] = detail::from_float<S>(acc[c] * inv);
  }
}

// flash_attention_kernel: bf16 / fp16 attention on tensor cores, FlashAttention-2 style. A block of four warps
// takes 64 query rows of one (batch, head), 16 rows per warp, and walks the keys in tiles of 64 (K and V tiles in
// shared memory, rows padded by 8 elements so ldmatrix reads hit distinct banks). Everything else stays in
// registers, in the layouts of mma.sync.m16n8k16 (fp32 accumulation):
//   S (16, 64) = Q_w K^T     Q fragments loaded once; 8 accumulators of 16 x 8 keys
//   online softmax           thread (g = lane / 4, t = lane % 4) holds rows g and g + 8, keys 8 j + 2 t, + 1;
//                            row max and sum over the 4 threads of a row by two shuffles
//   O (16, dp) += P V        P re-packed from S's accumulators straight into A fragments (the C layout of
//                            two 16 x 8 blocks is the A layout of one 16 x 16), rounded to the storage type as
//                            torch's SDPA rounds it; V fragments by ldmatrix.trans
// The head dimension is zero-padded to dp, a multiple of 16 (ViT-g's 88 -> 96): zeros change no dot product.

namespace detail {
constexpr int flash_warps = 4, flash_rows = 16, flash_queries = flash_warps * flash_rows, flash_keys = 64;

inline int padded_head_dim(index head_dim) { return static_cast<int>((head_dim + 15) / 16 * 16); }
/// Shared memory: Q, K, V tiles of (64, dp + 8) 2-byte elements.
inline std::size_t flash_shared_bytes(int dp) { return sizeof(std::uint16_t) * static_cast<std::size_t>(3 * flash_keys * (dp + 8)); }

__device__ __forceinline__ unsigned shared_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

/// d (16 x 8, fp32) += a (16 x 16) b (16 x 8), bf16 or fp16 operands.
template <class S>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  if constexpr (std::is_same_v<S, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

/// Two floats rounded to S and packed (the first in the low half: the lower column of an mma operand).
template <class S>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  if constexpr (std::is_same_v<S, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&v);
  }
}
}  // namespace detail

template <class S>
__global__ void __launch_bounds__(detail::flash_warps * 32)
    flash_attention_kernel(matrix<const S> q, matrix<const S> k, matrix<const S> v, mask_arg mask, index queries, index keys,
                           index key_batch_rows, int head_dim, int dp, float scale, bool vector_ok, matrix<S> out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int tile = detail::flash_keys, max_k_steps = detail::attention_max_head_dim / 16;
  constexpr int key_blocks = tile / 8, max_d_blocks = detail::attention_max_head_dim / 8;
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, dh = head_dim, ld = dp + 8;
  const int k_steps = dp / 16, d_blocks = dp / 8;
  const index b = blockIdx.z, h = blockIdx.y, q0 = static_cast<index>(blockIdx.x) * detail::flash_queries;
  S* q_tile = reinterpret_cast<S*>(shared_bytes);  // (64, ld)
  S* k_tile = q_tile + tile * ld;                   // (64, ld)
  S* v_tile = k_tile + tile * ld;                   // (64, ld)

  const int q_rows = queries - q0 < detail::flash_queries ? static_cast<int>(queries - q0) : detail::flash_queries;
  detail::load_tile<S>(q_tile, ld, q.data + (b * queries + q0) * q.stride + h * dh, q.stride, q_rows, detail::flash_queries, dh, dp,
                       vector_ok);
  __syncthreads();
  unsigned q_frag[max_k_steps][4];  // this warp's 16 query rows as A fragments, 16 head columns per step
#pragma unroll
  for (int s = 0; s < max_k_steps; ++s)
    if (s < k_steps) detail::ldmatrix_x4(q_frag[s], q_tile + (warp * 16 + lane % 16) * ld + s * 16 + (lane / 16) * 8);

  const S* k_head = k.data + b * key_batch_rows * k.stride + h * dh;
  const S* v_head = v.data + b * key_batch_rows * v.stride + h * dh;
  const index row_query[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  const float* mask_rows[2];
#pragma unroll
  for (int half = 0; half < 2; ++half)
    mask_rows[half] = row_query[half] < queries ? detail::mask_row_of(mask, b, h, row_query[half], keys) : nullptr;

  float o[max_d_blocks][4];
#pragma unroll
  for (int j = 0; j < max_d_blocks; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float running_max[2] = {-INFINITY, -INFINITY}, running_sum[2] = {0.0f, 0.0f};

  for (index k0 = 0; k0 < keys; k0 += tile) {
    const int n = keys - k0 < tile ? static_cast<int>(keys - k0) : tile;
    __syncthreads();  // every warp is done with the previous K / V tile
    detail::load_tile<S>(k_tile, ld, k_head + k0 * k.stride, k.stride, n, tile, dh, dp, vector_ok);
    detail::load_tile<S>(v_tile, ld, v_head + k0 * v.stride, v.stride, n, tile, dh, dp, vector_ok);
    __syncthreads();

    float score[key_blocks][4];  // S: block j holds keys 8 j + 2 t, + 1 of rows g (0, 1) and g + 8 (2, 3)
#pragma unroll
    for (int j = 0; j < key_blocks; ++j) score[j][0] = score[j][1] = score[j][2] = score[j][3] = 0.0f;
#pragma unroll
    for (int s = 0; s < max_k_steps; ++s) {
      if (s >= k_steps) break;
#pragma unroll
      for (int pair = 0; pair < key_blocks / 2; ++pair) {  // 16 keys: two B fragments from one ldmatrix.x4
        unsigned kb[4];
        detail::ldmatrix_x4(kb, k_tile + (pair * 16 + (lane / 16) * 8 + lane % 8) * ld + s * 16 + ((lane / 8) % 2) * 8);
        detail::mma_16816<S>(score[2 * pair], q_frag[s], kb[0], kb[1]);
        detail::mma_16816<S>(score[2 * pair + 1], q_frag[s], kb[2], kb[3]);
      }
    }

    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < key_blocks; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int half = e / 2, key = 8 * j + 2 * t + e % 2;
        float value = -INFINITY;
        if (key < n) value = score[j][e] * scale + (mask_rows[half] ? mask_rows[half][k0 + key] : 0.0f);
        score[j][e] = value;
        tile_max[half] = fmaxf(tile_max[half], value);
      }
    float correction[2], tile_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      tile_max[half] = fmaxf(tile_max[half], __shfl_xor_sync(0xffffffffu, tile_max[half], 1));
      tile_max[half] = fmaxf(tile_max[half], __shfl_xor_sync(0xffffffffu, tile_max[half], 2));
      const float new_max = fmaxf(running_max[half], tile_max[half]);
      correction[half] = running_max[half] == -INFINITY ? 0.0f : __expf(running_max[half] - new_max);
      running_max[half] = new_max;
    }
#pragma unroll
    for (int j = 0; j < key_blocks; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int half = e / 2;
        const float p = score[j][e] == -INFINITY ? 0.0f : __expf(score[j][e] - running_max[half]);
        score[j][e] = p;
        tile_sum[half] += p;
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      tile_sum[half] += __shfl_xor_sync(0xffffffffu, tile_sum[half], 1);
      tile_sum[half] += __shfl_xor_sync(0xffffffffu, tile_sum[half], 2);
      running_sum[half] = running_sum[half] * correction[half] + tile_sum[half];
    }
#pragma unroll
    for (int j = 0; j < max_d_blocks; ++j) {
      o[j][0] *= correction[0], o[j][1] *= correction[0];
      o[j][2] *= correction[1], o[j][3] *= correction[1];
    }

#pragma unroll
    for (int s = 0; s < tile / 16; ++s) {  // 16 keys per step: P's A fragment from S blocks 2 s and 2 s + 1
      const unsigned p_frag[4] = {detail::pack2<S>(score[2 * s][0], score[2 * s][1]), detail::pack2<S>(score[2 * s][2], score[2 * s][3]),
                                  detail::pack2<S>(score[2 * s + 1][0], score[2 * s + 1][1]),
                                  detail::pack2<S>(score[2 * s + 1][2], score[2 * s + 1][3])};
#pragma unroll
      for (int pair = 0; pair < max_d_blocks / 2; ++pair) {  // 16 head columns: two B fragments per ldmatrix.x4.trans
        if (2 * pair >= d_blocks) break;
        unsigned vb[4];
        detail::ldmatrix_x4_trans(vb, v_tile + (s * 16 + lane % 8 + ((lane / 8) % 2) * 8) * ld + pair * 16 + (lane / 16) * 8);
        detail::mma_16816<S>(o[2 * pair], p_frag, vb[0], vb[1]);
        detail::mma_16816<S>(o[2 * pair + 1], p_frag, vb[2], vb[3]);
      }
    }
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const index i = row_query[half];
    if (i >= queries) continue;
    const float inv = 1.0f / running_sum[half];
    S* oi = out.data + (b * queries + i) * out.stride + h * dh;
#pragma unroll
    for (int j = 0; j < max_d_blocks; ++j) {
      const int d = 8 * j + 2 * t;
      if (d < dh) oi[d] = detail::from_float<S>(o[j][2 * half] * inv);
      if (d + 1 < dh) oi[d + 1] = detail::from_float<S>(o[j][2 * half + 1] * inv);
    }
  }
#else
  __trap();  // flash_attention needs sm_80 or newer; attention() picks attention_kernel there
#endif
}

// decode_attention_kernel: one query row per (batch, head), a decoding step. The keys are split over the block's
// eight warps: thread t scores keys t, t + 256, ... reading each key row straight from global memory (16-byte
// loads where aligned); the block's max and sum normalise; warp w then accumulates p_j v_j over keys w, w + 8, ...
// for its lanes' columns, and the eight partial outputs are summed in shared memory. A step's attention is a few
// microseconds however long the cache, instead of one warp walking every key tile.

namespace detail {
constexpr int decode_threads = 256, decode_warps = decode_threads / 32, decode_max_keys = 8192;

__device__ __forceinline__ float block_max(float v, float* scratch /* [32] */) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

/// q (dh floats, shared) . row (dh elements of S, global), four independent chains; 16-byte loads if vector_ok.
template <class S>
__device__ __forceinline__ float dot_row(const S* row, const float* q, int dh, bool vector_ok) {
  float partial[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (vector_ok) {
    using vec = vec16<S>;
    for (int d0 = 0; d0 < dh; d0 += vec::size) {
      vec chunk;
      chunk.bits = *reinterpret_cast<const uint4*>(row + d0);
#pragma unroll
      for (int e = 0; e < vec::size; ++e) partial[e % 4] += to_float(chunk.values[e]) * q[d0 + e];
    }
  } else {
    for (int d = 0; d < dh; ++d) partial[d % 4] += to_float(row[d]) * q[d];
  }
  return (partial[0] + partial[1]) + (partial[2] + partial[3]);
}
}  // namespace detail

template <class S, int Chunks /* ceil(head_dim / 32) */>
__global__ void __launch_bounds__(detail::decode_threads) decode_attention_kernel(matrix<const S> q, matrix<const S> k, matrix<const S> v,
                                                                                   mask_arg mask, index keys, index key_batch_rows,
                                                                                   int head_dim, float scale, bool vector_ok,
                                                                                   const std::int64_t* past_on_device, matrix<S> out) {
  extern __shared__ float shared[];
  __shared__ float scratch[32];
  const int dh = head_dim, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const index h = blockIdx.x, b = blockIdx.y;
  float* q_row = shared;                                        // (dh)
  float* scores = q_row + detail::attention_max_head_dim;       // (keys)
  float* partial = scores + keys;                               // (warps, dh)
  for (int d = threadIdx.x; d < dh; d += blockDim.x) q_row[d] = detail::to_float(q.data[b * q.stride + h * dh + d]);
  const float* mask_row = detail::mask_row_of(mask, b, h, 0, keys);  // rows `keys` apart
  if (past_on_device) keys = *past_on_device + 1;                     // a recorded step: the keys filled so far
  const S* k_head = k.data + b * key_batch_rows * k.stride + h * dh;
  const S* v_head = v.data + b * key_batch_rows * v.stride + h * dh;
  __syncthreads();

  float local_max = -INFINITY;
  for (index j = threadIdx.x; j < keys; j += blockDim.x) {
    const float score = detail::dot_row(k_head + j * k.stride, q_row, dh, vector_ok) * scale + (mask_row ? mask_row[j] : 0.0f);
    scores[j] = score;
    local_max = fmaxf(local_max, score);
  }
  const float row_max = detail::block_max(local_max, scratch);
  float local_sum = 0.0f;
  for (index j = threadIdx.x; j < keys; j += blockDim.x) {
    const float p = __expf(scores[j] - row_max);
    scores[j] = p;
    local_sum += p;
  }
  const float row_sum = detail::block_sum(local_sum, scratch);  // its barriers also publish scores[]

  float acc[Chunks];
#pragma unroll
  for (int c = 0; c < Chunks; ++c) acc[c] = 0.0f;
  for (index j = warp; j < keys; j += detail::decode_warps) {
    const float p = scores[j];
    const S* vj = v_head + j * v.stride;
#pragma unroll
    for (int c = 0; c < Chunks; ++c) {
      const int d = lane + 32 * c;
      if (d < dh) acc[c] += p * detail::to_float(vj[d]);
    }
  }
#pragma unroll
  for (int c = 0; c < Chunks; ++c) {
    const int d = lane + 32 * c;
    if (d < dh) partial[warp * dh + d] = acc[c];
  }
  __syncthreads();
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < detail::decode_warps; ++w) o += partial[w * dh + d];
    out.data[b * out.stride + h * dh + d] = detail::from_float<S>(o / row_sum);
  }
}

namespace detail {
/// launch(std::integral_constant<int, ceil(head_dim / 32)>): the kernels that give each lane head_dim / 32
/// columns are instantiated for 1 to 4 chunks (head_dim <= 128).
template <class Launch>
void with_head_chunks(index head_dim, Launch&& launch) {
  switch ((head_dim + 31) / 32) {
    case 1: launch(std::integral_constant<int, 1>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    case 3: launch(std::integral_constant<int, 3>{}); break;
    default: launch(std::integral_constant<int, 4>{}); break;
  }
}

/// Whether the current device has bf16 / fp16 mma.sync and ldmatrix (compute capability 8.0 or newer).
inline bool device_has_bf16_mma() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    return false;
  return major >= 8;
}
}  // namespace detail

template <class T>
void attention(cudaStream_t stream, matrix<const T> q, matrix<const T> k, matrix<const T> v, mask_arg mask, index batch,
               index queries, index keys, index key_batch_rows, index heads, float scale, matrix<T> out,
               const std::int64_t* past_on_device) {
  using S = detail::storage_t<T>;
  const index head_dim = q.cols / heads;
  if (head_dim > detail::attention_max_head_dim)
    throw invalid_argument("CUDA attention: head dimension " + std::to_string(head_dim) + " is over " +
                           std::to_string(detail::attention_max_head_dim));
  if (past_on_device && (queries != 1 || keys > detail::decode_max_keys))
    throw invalid_argument("CUDA attention: a recorded decoding step needs one query and at most " +
                           std::to_string(detail::decode_max_keys) + " keys, not " + std::to_string(queries) + " and " +
                           std::to_string(keys));
  if (batch == 0 || queries == 0) return;
  if (queries == 1 && keys <= detail::decode_max_keys) {  // a decoding step
    const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(detail::attention_max_head_dim + keys + detail::decode_warps * head_dim);
    const bool vector_ok = detail::vector_loads<T>(head_dim, {&k});
    const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(batch));
    detail::with_head_chunks(head_dim, [&](auto chunks) {
      decode_attention_kernel<S, decltype(chunks)::value><<<grid, detail::decode_threads, bytes, stream>>>(
          detail::device(q), detail::device(k), detail::device(v), mask, keys, key_batch_rows, static_cast<int>(head_dim), scale,
          vector_ok, past_on_device, detail::device(out));
    });
    detail::check_launch("decode_attention_kernel");
    return;
  }
  if constexpr (!std::is_same_v<T, float>) {
    // Tensor cores from a full 64-row query tile on; fewer queries (a decoding step, the Q-Former's 32) leave
    // most of the tile idle, and the warp-per-query kernel spreads them over more blocks.
    static const bool tensor_cores = detail::device_has_bf16_mma();
    if (tensor_cores && queries >= detail::flash_queries) {
      static const bool configured = [] {  // the largest tile set (dp = 128) needs more than the default 48 KB
        return cudaFuncSetAttribute(flash_attention_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(detail::flash_shared_bytes(detail::attention_max_head_dim))) == cudaSuccess;
      }();
      if (!configured) throw error("CUDA: cannot give flash_attention_kernel its shared memory");
      const int dp = detail::padded_head_dim(head_dim);
      const bool vector_ok = detail::vector_loads<T>(head_dim, {&q, &k, &v});
      const dim3 grid(static_cast<unsigned>((queries + detail::flash_queries - 1) / detail::flash_queries),
                      static_cast<unsigned>(heads), static_cast<unsigned>(batch));
      flash_attention_kernel<S><<<grid, detail::flash_warps * 32, detail::flash_shared_bytes(dp), stream>>>(
          detail::device(q), detail::device(k), detail::device(v), mask, queries, keys, key_batch_rows, static_cast<int>(head_dim), dp,
          scale, vector_ok, detail::device(out));
      detail::check_launch("flash_attention_kernel");
      return;
    }
  }
  const dim3 grid(static_cast<unsigned>((queries + detail::attention_warps - 1) / detail::attention_warps),
                  static_cast<unsigned>(heads), static_cast<unsigned>(batch));
  const std::size_t bytes = detail::attention_shared_bytes(head_dim);
  detail::with_head_chunks(head_dim, [&](auto chunks) {
    attention_kernel<S, decltype(chunks)::value><<<grid, detail::attention_warps * 32, bytes, stream>>>(
        detail::device(q), detail::device(k), detail::device(v), mask, queries, keys, key_batch_rows, static_cast<int>(head_dim), scale,
        detail::device(out));
  });
  detail::check_launch("attention_kernel");
}

}  // namespace qformer::cuda_kernels
