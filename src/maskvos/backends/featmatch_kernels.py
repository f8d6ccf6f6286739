"""featmatch's matching kernels: exact top-k through group maxima, and affinities computed in
chunks small enough to stay in cache.

On CPUs, `torch.topk` costs about 2 ns per element of long rows, as much as the matrix product
that scored them, and a fresh affinity matrix of 60-120 MB costs as much again in page faults.
Here a row is cut into `_GROUPS` strided groups; only the k groups with the largest maxima can hold
the top k (the k-th largest group maximum is at most the k-th largest element), so top-k runs over
those k groups' elements only. The values are exactly `torch.topk`'s, in the same order; only
which of several equal affinities is taken may differ.
"""

from __future__ import annotations

import threading

import torch

#: Groups a row is cut into for `topk`, strided: with n_g = n // _GROUPS, group j holds elements
#: j, j + n_g, j + 2 n_g, ..., so the group maxima are one vectorised pass over the row.
_GROUPS = 16
#: Rows shorter than this many groups per selected element go straight to `torch.topk`.
_MIN_GROUPS_PER_K = 4
#: Elements of one chunk of affinities. Chunks that stay in cache are about 10% faster on an idle
#: CPU, but every op is an OpenMP parallel region, and on a loaded 2-core CPU each region can wait
#: for a descheduled thread (many small chunks ran 2-4x slower there): one chunk per frame for the
#: usual sizes, in buffers that are kept.
CHUNK_ELEMENTS = 1 << 26
#: Per-thread scratch buffer of `matmul_topk` (a fresh one would cost page faults on every call).
_scratch = threading.local()


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values along the last dimension of `x` (..., n), sorted descending, and their
    indices: `torch.topk(x, k)`'s values exactly (ties may pick other indices); deterministic."""
    n = x.shape[-1]
    k = min(k, n)
    per_group = n // _GROUPS  # groups of _GROUPS elements each, strided by per_group
    if per_group < _MIN_GROUPS_PER_K * k:
        return x.topk(k, dim=-1)
    main = x[..., : _GROUPS * per_group].unflatten(-1, (_GROUPS, per_group))  # (..., G, n_g): column j is group j
    group_idx = main.amax(-2).topk(k, dim=-1).indices  # (..., k) the groups with the largest maxima
    lead = group_idx.shape[:-1]
    cand = main.gather(-1, group_idx.unsqueeze(-2).expand(*lead, _GROUPS, k)).flatten(-2)  # (..., G * k)
    offsets = torch.arange(0, _GROUPS * per_group, per_group, device=x.device).view(_GROUPS, 1)
    cand_idx = (group_idx.unsqueeze(-2) + offsets).flatten(-2)
    if n > _GROUPS * per_group:  # the few elements past the last full group are all candidates
        tail = torch.arange(_GROUPS * per_group, n, device=x.device)
        cand = torch.cat([cand, x[..., _GROUPS * per_group :]], dim=-1)
        cand_idx = torch.cat([cand_idx, tail.expand(*lead, len(tail))], dim=-1)
    top, pos = cand.topk(k, dim=-1)
    return top, cand_idx.gather(-1, pos)


def matmul_topk(query: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k affinities (n, k) of query rows (n, C) against memory keys (C, M), and their columns
    (n, k): `(query @ keys).topk(k)` in chunks of rows whose affinities stay in cache."""
    n, m = query.shape[0], keys.shape[1]
    k = min(k, m)
    dtype = torch.promote_types(query.dtype, keys.dtype)
    query, keys = query.to(dtype), keys.to(dtype)
    top = torch.empty(n, k, dtype=dtype)
    idx = torch.empty(n, k, dtype=torch.long)
    rows = max(64, CHUNK_ELEMENTS // max(m, 1))
    size = min(rows, n) * m
    buf = getattr(_scratch, "buf", None)
    # A buffer made under torch.inference_mode cannot be written outside it (nor one made outside
    # be used inside without leaving an ordinary tensor behind): keep one of the current mode.
    if buf is None or buf.dtype != dtype or buf.numel() < size or buf.is_inference() != torch.is_inference_mode_enabled():
        buf = _scratch.buf = torch.empty(size, dtype=dtype)
    buf = buf[:size].view(min(rows, n), m)
    for i in range(0, n, rows):
        j = min(n, i + rows)
        aff = torch.mm(query[i:j], keys, out=buf[: j - i])
        top[i:j], idx[i:j] = topk(aff, k)
    return top, idx
