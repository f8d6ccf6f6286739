"""featmatch's windowed matching of the recent frames: every query cell against the memory cells
within a few cells of it, as batched matrix products over tiles."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskvos.backends import featmatch_kernels as kernels

#: Query tiles of the windowed matching are _TILE x _TILE stride-8 cells.
_TILE = 8
#: Affinity of pairs that must not be chosen (outside the window, padding, empty slots).
EXCLUDED = -1e4


class WindowMemory:
    """The recent frames laid out for windowed matching.

    The query grid is cut into _TILE x _TILE tiles. For each tile and memory frame the
    (_TILE + 2r)^2 memory cells around the tile are stored contiguously (cell-major, channels
    last), so one batched matrix product scores every query cell against every memory cell within
    reach. Two additive biases remove the other pairs: one per memory cell (padding outside the
    frame, empty slots) and one per (query, memory) position within a tile, the same for every tile
    (pairs farther apart than r cells). Tiles are scored a few at a time, so their affinities stay
    in cache for the top-k. A frame goes to slot frame_idx % capacity, so a session rebuilt from
    saved memories lays them out (and breaks affinity ties) exactly as the original did.
    """

    def __init__(self, channels: int, labels: int, h: int, w: int, radius: int, capacity: int, dtype: torch.dtype) -> None:
        self.labels, self.h, self.w, self.r, self.capacity = labels, h, w, radius, capacity
        self.ty, self.tx = -(-h // _TILE), -(-w // _TILE)
        self.m = _TILE + 2 * radius
        self.s = self.m * self.m
        tiles = self.ty * self.tx
        self.keys = torch.zeros(tiles, capacity * self.s, channels, dtype=dtype)  # (tiles, cells, C)
        self.vals = torch.zeros(tiles, capacity * self.s, labels)
        qy, qx = (g.flatten() for g in torch.meshgrid(torch.arange(_TILE), torch.arange(_TILE), indexing="ij"))
        my, mx = (g.flatten() for g in torch.meshgrid(torch.arange(self.m), torch.arange(self.m), indexing="ij"))
        in_window = ((my[None] - radius - qy[:, None]).abs() <= radius) & ((mx[None] - radius - qx[:, None]).abs() <= radius)
        self.reach_bias = torch.where(in_window, 0.0, EXCLUDED).to(dtype).repeat(1, capacity)  # (t*t, cells)
        inside = self._tiles(torch.ones(1, h, w)).reshape(tiles, self.s) > 0
        self.inside_bias = torch.where(inside, 0.0, EXCLUDED).to(dtype)  # (tiles, S)
        self.bias = torch.full((tiles, capacity * self.s), EXCLUDED, dtype=dtype)  # all slots empty
        self._aff: torch.Tensor | None = None  # affinities of a chunk of tiles, reused

    def _tiles(self, x: torch.Tensor) -> torch.Tensor:
        """(C, h, w) -> a (ty, tx, C, m, m) view of the zero-padded map: each tile's reach."""
        r = self.r
        hp, wp = self.ty * _TILE + 2 * r, self.tx * _TILE + 2 * r
        xp = F.pad(x, (r, wp - self.w - r, r, hp - self.h - r)).contiguous()
        return xp.as_strided((self.ty, self.tx, x.shape[0], self.m, self.m), (_TILE * wp, _TILE, hp * wp, wp, 1))

    def _tiles_last(self, x: torch.Tensor) -> torch.Tensor:
        """(C, h, w) -> a (ty, tx, m, m, C) view of the zero-padded map, channels last."""
        r = self.r
        hp, wp = self.ty * _TILE + 2 * r, self.tx * _TILE + 2 * r
        c = x.shape[0]
        xp = F.pad(x, (r, wp - self.w - r, r, hp - self.h - r)).permute(1, 2, 0).contiguous()  # (hp, wp, C)
        return xp.as_strided((self.ty, self.tx, self.m, self.m, c), (_TILE * wp * c, _TILE * c, wp * c, c, 1))

    def add(self, frame_idx: int, keys: torch.Tensor, probs: torch.Tensor) -> None:
        """Store a frame's keys (C, h, w) and soft labels (L, h, w) in its slot."""
        slot = frame_idx % self.capacity
        span = slice(slot * self.s, (slot + 1) * self.s)
        dst = self.keys.view(self.ty, self.tx, -1, self.keys.shape[2])[:, :, span]
        dst.unflatten(2, (self.m, self.m)).copy_(self._tiles_last(keys.to(self.keys.dtype)))
        vals = self._tiles_last(probs)  # (ty, tx, m, m, L)
        self.vals.view(self.ty, self.tx, -1, self.labels)[:, :, span].unflatten(2, (self.m, self.m)).copy_(vals)
        self.bias[:, span] = self.inside_bias

    def read(self, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k affinities (N, k) and their labels (N, k, L) for the query keys (C, h, w)."""
        c, t = query.shape[0], _TILE
        tiles, cells = self.ty * self.tx, self.keys.shape[1]
        kk = min(k, cells)
        padded = F.pad(query, (0, self.tx * t - self.w, 0, self.ty * t - self.h))
        q = padded.view(c, self.ty, t, self.tx, t).permute(1, 3, 2, 4, 0).reshape(tiles, t * t, c).to(self.keys.dtype)
        chunk = max(1, kernels.CHUNK_ELEMENTS // (t * t * cells))
        if self._aff is None or self._aff.shape[0] != min(chunk, tiles):
            # Kept: a fresh buffer this large costs about as much in page faults as the product.
            self._aff = torch.empty(min(chunk, tiles), t * t, cells, dtype=self.keys.dtype)
        aff = self._aff
        top = torch.empty(tiles, t * t, kk, dtype=self.keys.dtype)
        idx = torch.empty(tiles, t * t, kk, dtype=torch.long)
        for i in range(0, tiles, chunk):
            j = min(tiles, i + chunk)
            a = torch.add(self.reach_bias, self.bias[i:j, None], out=aff[: j - i])
            a.baddbmm_(q[i:j], self.keys[i:j].transpose(1, 2))
            top[i:j], idx[i:j] = kernels.topk(a, kk)
        flat = (idx + (torch.arange(tiles) * cells).view(-1, 1, 1)).flatten()
        vals = self.vals.view(-1, self.labels)[flat].view(self.ty, self.tx, t, t, kk, self.labels)
        top = top.float().view(self.ty, self.tx, t, t, kk).permute(0, 2, 1, 3, 4).reshape(self.ty * t, self.tx * t, kk)
        vals = vals.permute(0, 2, 1, 3, 4, 5).reshape(self.ty * t, self.tx * t, kk, self.labels)
        n = self.h * self.w
        return top[: self.h, : self.w].reshape(n, kk), vals[: self.h, : self.w].reshape(n, kk, self.labels)
