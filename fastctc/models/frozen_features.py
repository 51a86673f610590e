"""Frozen features computed once: each utterance's conv-stack output, stored the first time a batch
holds it and gathered from then on instead of running the frozen conv stack again.

Layout: one flat (F + 1, C) buffer. F is the frames reserved for every utterance of a split, end to end:
its listed duration's frame count plus one frame of slack (a decoder may give a sample or two more than
the header said). Row F stays zero and fills every padded frame of a gathered batch. An utterance's
rows are written once, from the batch it is first seen in, and only read afterwards; one that loads
longer than its reservation is never stored (its batches run the conv stack every time).

Exactness is the caller's to decide (fastctc.train.feature_cache): a stored row is what the conv stack
gave the utterance in the batch it was first seen in, which is what it gives in any other batch only
when padding cannot reach its valid frames (a layer-norm stack, or a group-norm one whose statistics
cover each row's own frames), and the padded frames of a gathered batch (zeros) must be read by nothing
(the model masks them). A conv over a differently shaped batch may still round differently in the last bit.

Tiers: "device" (the run's device), "host" (pinned host memory, copied to the device per batch) and
"disk" (a memory-mapped file, unlinked as soon as it is mapped, so its space is freed however the run
ends). Host syncs: none. Gather and scatter indices are built on the host from the batch's ids and
lengths (host tensors) and copied to the device. On CUDA, a host or disk write copies the new rows to
pinned staging memory asynchronously and lands them in the buffer once that copy is done
(event.query); a gather first lands writes still in flight (rows written an epoch before: long done).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .config import EncoderConfig
from .feature_encoder import conv_output_length

TIERS = ("device", "host", "disk")


def frames_of(samples: np.ndarray, cfg: EncoderConfig) -> np.ndarray:
    """(B,) samples -> (B,) frames the conv stack of `cfg` makes of them (0 below its receptive field)."""
    n = np.asarray(samples, dtype=np.int64)
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        n = conv_output_length(n, k, s)
    return np.maximum(n, 0)


class FrozenFeatureStore:
    """One split's conv-stack outputs, keyed by utterance id. ids: the split's (unique) ids; samples:
    each one's listed length in samples; dtype: the step's precision (bf16 under bf16 autocast)."""

    def __init__(
        self,
        ids: Sequence[str],
        samples: Sequence[int],
        cfg: EncoderConfig,
        dtype: torch.dtype,
        device: torch.device,
        tier: str = "device",
        path: Path | None = None,
    ):
        self.cfg, self.dtype, self.device, self.tier = cfg, dtype, device, tier
        self.slot = {u: i for i, u in enumerate(ids)}
        self.reserved = frames_of(samples, cfg) + 1  # (U,) one frame of slack each
        self.offsets = np.concatenate([[0], np.cumsum(self.reserved)])  # (U + 1,) first row of each
        self.pad_row = int(self.offsets[-1])  # the zero row
        self.filled = np.zeros(len(self.reserved), dtype=bool)  # host state: never read from the device
        # each stored utterance's length as it loaded (samples), in shared memory, so that the split's
        # SpeechDataset (`stored`), in its loader workers, leaves a batch unread once all of it is here;
        # -1, written by a worker: an utterance whose load gives a note, read every time
        self.known = torch.zeros(len(self.reserved), dtype=torch.int64).share_memory_()
        self._known = self.known.numpy()  # the same memory, read and written here without a torch op
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[torch.cuda.Event, torch.Tensor, torch.Tensor]] = []  # CUDA host/disk writes
        rows, C = self.pad_row + 1, cfg.conv_dim[-1]
        if tier == "device":
            self.buffer = torch.zeros(rows, C, dtype=dtype, device=device)
        elif tier == "host":
            self.buffer = torch.zeros(rows, C, dtype=dtype, pin_memory=self.cuda)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            self.buffer = torch.from_file(str(path), shared=True, size=rows * C, dtype=dtype).view(rows, C)
            path.unlink()  # the mapping keeps the pages; the space is freed when the run ends
        self.path = path

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    @property
    def frames(self) -> int:
        return self.pad_row

    def features(
        self, ids: Sequence[str], lengths: torch.Tensor, padded: int, compute: Callable[[], torch.Tensor] | None
    ) -> torch.Tensor:
        """The batch's conv-stack output (B, T, C) in the store's dtype, on the device: gathered when
        every row is stored, else compute() (the conv stack on the batch) with its new rows stored.
        ids (B,) and lengths (B,) samples, on the host (the loader's); padded: the batch's padded samples;
        compute None: the batch's audio was not read (Batch.audio), which the loader does only when all
        of it is stored."""
        n = frames_of(lengths.numpy(), self.cfg)  # (B,)
        T = int(frames_of(np.array([padded]), self.cfg)[0])
        slots = np.array([self.slot.get(u, -1) for u in ids], dtype=np.int64)
        known = len(slots) == len(n) and bool((slots >= 0).all())  # a stand-in batch has no ids
        self._land(wait=False)
        if known and self.filled[slots].all():
            return self._gather(slots, n, T)
        if compute is None:
            raise RuntimeError(f"frozen features: a batch without audio holds utterances not stored: {list(ids)}")
        # a fresh contiguous (B, T, C), as a gathered batch is: a view (the conv's layout) would make
        # torch.compile guard on its base and compile the step again for gathered batches
        feats = compute().to(self.dtype).clone(memory_format=torch.contiguous_format)
        if len(slots) == len(n):
            new = [b for b in range(len(n)) if slots[b] >= 0 and not self.filled[slots[b]]]
            new = [b for b in new if n[b] <= self.reserved[slots[b]]]
            if new:
                self._write(feats, np.array(new), slots, n, T)
                fresh = [b for b in new if self._known[slots[b]] == 0]
                self._known[slots[fresh]] = lengths.numpy()[fresh]
        return feats

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        return (host.pin_memory() if self.cuda else host).to(self.device, non_blocking=True)

    def _gather(self, slots: np.ndarray, n: np.ndarray, T: int) -> torch.Tensor:
        t = np.arange(T)[None, :]  # (1, T)
        starts = self.offsets[slots][:, None]  # (B, 1)
        idx = torch.as_tensor(np.where(t < n[:, None], starts + t, self.pad_row).reshape(-1))  # (B * T,)
        B, C = len(slots), self.buffer.shape[1]
        if self.tier == "device":
            return self.buffer[self._to_device(idx).view(B, T)]  # (B, T, C), not a view
        self._land(wait=True)
        rows = torch.empty(B, T, C, dtype=self.dtype, pin_memory=self.cuda)
        torch.index_select(self.buffer, 0, idx, out=rows.view(B * T, C))
        return rows.to(self.device, non_blocking=True)  # pinned: the copy does not block

    def _write(self, feats: torch.Tensor, new: np.ndarray, slots: np.ndarray, n: np.ndarray, T: int) -> None:
        """Store rows `new` of feats (B, T, C): frames 0..n[b]-1 of row b go to its utterance's slot."""
        src = np.concatenate([b * T + np.arange(n[b]) for b in new])  # (K,)
        dst = torch.as_tensor(np.concatenate([self.offsets[slots[b]] + np.arange(n[b]) for b in new]))  # (K,)
        rows = feats.reshape(-1, feats.shape[-1]).index_select(0, self._to_device(torch.as_tensor(src)))  # (K, C)
        if self.tier == "device":
            self.buffer.index_copy_(0, self._to_device(dst), rows)
        elif not self.cuda:
            self.buffer.index_copy_(0, dst, rows)
        else:  # device -> pinned staging, landed in the buffer by _land once the copy is done
            staging = torch.empty(rows.shape, dtype=self.dtype, pin_memory=True)
            staging.copy_(rows, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.pending.append((event, staging, dst))
        self.filled[slots[new]] = True

    def _land(self, wait: bool) -> None:
        """Copy the finished CUDA writes from staging into the host or disk buffer; with `wait`, all of them
        (a host wait only for a write still in flight: one made an epoch before is long done)."""
        still = []
        for event, staging, dst in self.pending:
            if wait or event.query():
                event.synchronize()
                self.buffer.index_copy_(0, dst, staging)
            else:
                still.append((event, staging, dst))
        self.pending = still
