"""Length-bucketed batching (and the recipe's group_by_length), collation, and the DataLoader the trainer iterates.

LengthBucketSampler, per epoch, from rng(seed, epoch):

1. sort the utterances by length in whole encoder frames, randomly among equal lengths: batches
   change from epoch to epoch while the padding stays near the least any batching can have;
2. cut that order into batches of `batch_size` utterances, or fill each batch up to
   `batch_seconds` of padded audio;
3. (DDP, accumulation) split the largest batches until the count divides by world_size * accum:
   every rank takes the same number of steps and every utterance is seen exactly once per epoch;
4. group neighbouring batches into steps of world_size * accum batches (ranks at one step get
   similar lengths, so none waits on a longer one), shuffle the steps, and put the step with the
   most padded audio first (as group_by_length does: an out-of-memory shows in the first step);
5. rank r takes batches r * accum ... r * accum + accum - 1 of every step, so a step's utterances
   are the same however the global batch is split between GPUs and accumulation.

Padded lengths (the shapes torch.compile sees): a batch is padded to its longest utterance rounded
up to a whole frame (`frame`: the resolved encoder's samples per frame, EncoderConfig.frame_stride). The sorted frame sequence does not depend on the epoch, so neither does the set
of shapes: at most one per batch, the same ones every epoch. `pad_lengths=K` bounds it further to
K lengths, placed to waste the least padding (an exact 1-D partition by dynamic programming); fewer
shapes cost padding, and `fastctc data stats` prints how much. The batch count is the same every
epoch; resuming mid-epoch is set_epoch(epoch, start=steps_already_taken).

GroupByLengthSampler (data.sampler = "group_by_length") is the recipe's order instead, transformers'
get_length_grouped_indices (trainer_pt_utils.py) per epoch, from the same rng(seed, epoch):

1. a random permutation of the utterances, cut into megabatches of M = min(N // (4 * S), 50) * S
   (at least S), where S = batch_size * world_size * accum utterances make one optimizer step;
2. each megabatch sorted by length in samples, longest first (stable: ties keep the random order);
3. the longest utterance of all swapped with the first of megabatch 0, so the first batch holds it;
4. the order cut into batches of batch_size, in order (a megabatch holds M / batch_size whole batches;
   the last batch may be short); steps of world_size * accum neighbouring batches, as above (split the
   largest batch until they divide evenly, only under DDP or accumulation).

Its batches pad more than buckets do (a megabatch spans the whole length range), and consecutive
steps run from long to short inside each megabatch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..config import SAMPLERS, DataConfig
from ..models.config import EncoderConfig
from .audio import normalise_audio
from .dataset import Item
from .report import DataReport
from .text import WORD_DELIMITER, CharVocab

# Samples per frame where a caller names no encoder: the default EncoderConfig's (the wav2vec2 stack
# every card uses). The trainer passes its resolved encoder's frame_stride.
DEFAULT_FRAME = EncoderConfig().frame_stride


def frames(lengths, frame: int = DEFAULT_FRAME) -> np.ndarray:
    """Lengths in samples -> whole frames of `frame` samples, rounded up."""
    return -(-np.asarray(lengths, dtype=np.int64) // frame)


def pad_ladder(lengths: Sequence[int], count: int, frame: int = DEFAULT_FRAME) -> np.ndarray:
    """The `count` padded lengths (ascending, whole frames, the last >= max(lengths)) that minimise
    the total padding when every utterance is padded to the first one that holds it.

    Dynamic programming over the distinct frame counts v_0 < ... < v_{V-1} (with multiplicities):
    best[k][j] = min_i best[k-1][i] + cost(i, j), where values i..j-1 are padded to v_{j-1}.
    O(count * V^2) with V <= a few thousand: well under a second.
    """
    values, counts = np.unique(frames(lengths, frame), return_counts=True)  # (V,), (V,)
    if count >= len(values):
        return values * frame
    n_cum = np.concatenate([[0], np.cumsum(counts)])  # (V+1,) utterances below value j
    s_cum = np.concatenate([[0], np.cumsum(counts * values)])  # (V+1,) their frames
    best = np.full(len(values) + 1, np.inf)
    best[0] = 0.0
    choice = []
    for _ in range(count):
        nxt, arg = np.full_like(best, np.inf), np.zeros(len(best), dtype=np.int64)
        for j in range(1, len(values) + 1):
            cost = best[:j] + values[j - 1] * (n_cum[j] - n_cum[:j]) - (s_cum[j] - s_cum[:j])  # (j,)
            arg[j] = int(np.argmin(cost))
            nxt[j] = cost[arg[j]]
        choice.append(arg)
        best = nxt
    edges, j = [], len(values)
    for arg in reversed(choice):
        if j == 0:
            break
        edges.append(values[j - 1])
        j = arg[j]
    return np.unique(np.array(edges, dtype=np.int64)) * frame


def padded_length(n: int, ladder: np.ndarray | None = None, frame: int = DEFAULT_FRAME) -> int:
    """`n` samples rounded up to a whole frame, then to the ladder's first length that holds it."""
    n = int(-(-n // frame) * frame)
    if ladder is None or len(ladder) == 0 or n > ladder[-1]:
        return n
    return int(ladder[np.searchsorted(ladder, n)])


class LengthBucketSampler:
    """Batches (lists of dataset indices) of similar length; see the module doc for the recipe.

    durations: seconds per utterance; frame: samples per encoder frame (EncoderConfig.frame_stride);
    batch_seconds > 0 budgets padded audio per batch instead of batch_size utterances; pad_lengths > 0
    bounds the padded lengths to that many; rank / world_size: this process's share under DDP.
    """

    def __init__(
        self,
        durations: Sequence[float],
        seed: int,
        batch_size: int = 32,
        batch_seconds: float = 0.0,
        pad_lengths: int = 0,
        rank: int = 0,
        world_size: int = 1,
        sample_rate: int = 16_000,
        accum: int = 1,
        frame: int = DEFAULT_FRAME,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"LengthBucketSampler: rank {rank} outside world_size {world_size}")
        if len(durations) < world_size * accum:
            raise ValueError(f"LengthBucketSampler: {len(durations)} utterances cannot feed {world_size} ranks")
        self.lengths = np.round(np.asarray(durations, dtype=np.float64) * sample_rate).astype(np.int64)  # (N,)
        self.frame = frame
        self.frames = frames(self.lengths, frame)  # (N,) the sort key
        self.ladder = pad_ladder(self.lengths, pad_lengths, frame) if pad_lengths else None
        self.padded = np.array(
            [padded_length(n, self.ladder, frame=frame) for n in self.lengths], dtype=np.int64
        )  # (N,)
        self.seed, self.batch_size, self.rank, self.world_size = seed, batch_size, rank, world_size
        # gradient accumulation: an optimizer step takes `accum` consecutive batches from each rank.
        # They are cut from one group of world_size * accum neighbouring batches, so a step sees the
        # same utterances whatever the split between GPUs and accumulation (4 x 8 GPUs = 32 x 1).
        self.accum = accum
        self.parts = world_size * accum
        self.budget = int(batch_seconds * sample_rate)
        self.epoch, self.start = 0, 0
        self._len = len(self.epoch_batches(0))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch`, skipping its first `start` optimizer steps (a resumed run)."""
        self.epoch, self.start = epoch, start

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        if not self.budget:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, begin = [], 0
        for i in range(1, len(order) + 1):
            # order is ascending, so the batch's padded length is its newest member's
            if i == len(order) or (i + 1 - begin) * self.padded[order[i]] > self.budget:
                batches.append(order[begin:i])
                begin = i
        return batches

    def epoch_batches(self, epoch: int) -> list[list[list[int]]]:
        """All ranks' batches of `epoch`: steps[s][r * accum + m] is rank r's m-th micro-batch at step s."""
        rng = np.random.default_rng([self.seed, epoch])
        order = np.lexsort((rng.random(len(self.lengths)), self.frames))  # by frames, randomly among equals
        batches = self._cut(order)
        while len(batches) % self.parts:  # split the largest until every rank gets the same count
            k = max(range(len(batches)), key=lambda j: len(batches[j]))
            half = (len(batches[k]) + 1) // 2
            batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
        steps = [batches[i : i + self.parts] for i in range(0, len(batches), self.parts)]
        volume = [sum(len(b) * self.padded[b].max() for b in step) for step in steps]
        first = int(np.argmax(volume))
        rest = [s for s in rng.permutation(len(steps)).tolist() if s != first]
        return [[b.tolist() for b in steps[s]] for s in [first, *rest]]

    def __iter__(self) -> Iterator[list[int]]:
        steps = self.epoch_batches(self.epoch)
        first = self.rank * self.accum
        return iter([b for step in steps[self.start :] for b in step[first : first + self.accum]])

    def __len__(self) -> int:
        """Batches per rank in a full epoch (the same every epoch)."""
        return self._len * self.accum


def group_by_length_order(lengths: np.ndarray, megabatch: int, permutation: np.ndarray) -> np.ndarray:
    """Steps 1-3 of GroupByLengthSampler: `permutation` (N,) cut into chunks of `megabatch`, each sorted
    by `lengths` descending (stable), the overall longest swapped to the front. Returns (N,) indices."""
    chunks = [permutation[i : i + megabatch] for i in range(0, len(permutation), megabatch)]
    chunks = [c[np.argsort(-lengths[c], kind="stable")] for c in chunks]
    top = int(np.argmax([lengths[c[0]] for c in chunks]))  # the first of equal maxima, as torch.argmax
    chunks[0][0], chunks[top][0] = chunks[top][0], chunks[0][0]
    return np.concatenate(chunks)


class GroupByLengthSampler(LengthBucketSampler):
    """The recipe's batches (transformers' group_by_length; the module doc's second recipe), with
    LengthBucketSampler's interface: per-epoch seeding, set_epoch(epoch, start) resume, DDP/accum steps."""

    def __init__(
        self,
        durations: Sequence[float],
        seed: int,
        batch_size: int = 32,
        batch_seconds: float = 0.0,
        pad_lengths: int = 0,
        rank: int = 0,
        world_size: int = 1,
        sample_rate: int = 16_000,
        accum: int = 1,
        frame: int = DEFAULT_FRAME,
    ):
        if batch_seconds:
            raise ValueError("GroupByLengthSampler: batches are batch_size utterances; batch_seconds must be 0")
        # epoch -> (N,) the permutation step 1 cuts; None: numpy's, from rng(seed, epoch). The trainer sets
        # train/recipe_streams.TrainerOrder's here for train.random_streams = recipe
        self.permutation: Callable[[int], np.ndarray] | None = None
        super().__init__(durations, seed, batch_size, 0.0, pad_lengths, rank, world_size, sample_rate, accum, frame)

    def megabatch(self) -> int:
        step = self.batch_size * self.parts  # the Trainer's sampler takes batch size x accumulation
        return max(1, min(len(self.lengths) // (4 * step), 50)) * step

    def epoch_batches(self, epoch: int) -> list[list[list[int]]]:
        if self.permutation is not None:  # the recipe's own draws (train.random_streams = recipe)
            permutation = self.permutation(epoch)
        else:
            permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self.lengths))
        order = group_by_length_order(self.lengths, self.megabatch(), permutation)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        while len(batches) % self.parts:  # as LengthBucketSampler: every rank gets the same count
            k = max(range(len(batches)), key=lambda j: len(batches[j]))
            half = (len(batches[k]) + 1) // 2
            batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
        return [[b.tolist() for b in batches[i : i + self.parts]] for i in range(0, len(batches), self.parts)]


# data.sampler -> its class (the names are config.SAMPLERS)
SAMPLER_CLASSES = {"buckets": LengthBucketSampler, "group_by_length": GroupByLengthSampler}
assert tuple(SAMPLER_CLASSES) == SAMPLERS


@dataclass
class Batch:
    waveforms: torch.Tensor  # (B, N) float32, zero-padded; N is a rung of the sampler's ladder
    lengths: torch.Tensor  # (B,) samples
    targets: torch.Tensor  # (B, S) label ids, padded with 0 past target_lengths
    target_lengths: torch.Tensor  # (B,)
    texts: list[str]
    ids: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (reason, why) of items that did not load
    notes: list[tuple[str, str]] = field(default_factory=list)  # (reason, what) of items changed when loaded
    unknown_chars: int = 0  # transcript characters mapped to [UNK]
    # False: no file was read, every row's frozen features are stored; waveforms is then a zero-strided
    # (B, N) of zeros that gives the padded shape and nothing else
    audio: bool = True

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        return replace(
            self,
            waveforms=self.waveforms.pin_memory() if self.audio else self.waveforms,
            lengths=self.lengths.pin_memory(),
            targets=self.targets.pin_memory(),
            target_lengths=self.target_lengths.pin_memory(),
        )


def pad_waveforms(
    audios: Sequence[np.ndarray], do_normalize: bool = True, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio (N_i,) -> waveforms (B, N) zero-padded to `length` (default: the longest), each row
    normalised first when do_normalize; and lengths (B,) in samples."""
    n = max((len(a) for a in audios), default=0) if length is None else length
    waveforms = torch.zeros(len(audios), n)
    for i, a in enumerate(audios):
        waveforms[i, : len(a)] = torch.from_numpy(normalise_audio(a) if do_normalize else a.astype(np.float32))
    return waveforms, torch.tensor([len(a) for a in audios], dtype=torch.long)


def collate(
    audios: Sequence[np.ndarray],
    texts: Sequence[str],
    vocab: CharVocab,
    do_normalize: bool = True,
    ladder: np.ndarray | None = None,
    frame: int = DEFAULT_FRAME,
    trailing_delimiter: bool = False,
) -> Batch:
    """Audio (N_i,) and transcripts -> a Batch padded to the ladder rung of the longest (or to it,
    rounded up to whole frames of `frame` samples). trailing_delimiter: each target ends with `|`, as
    the recipe's appended space gives (texts stay as they are: references are scored without it).
    vocab None: no targets (scoring a finished model)."""
    longest = max((len(a) for a in audios), default=0)
    waveforms, lengths = pad_waveforms(audios, do_normalize, padded_length(longest, ladder, frame=frame))
    return with_targets(waveforms, lengths, texts, vocab, trailing_delimiter)


def collate_stored(
    samples: Sequence[int],
    texts: Sequence[str],
    vocab: CharVocab,
    ladder: np.ndarray | None = None,
    frame: int = DEFAULT_FRAME,
    trailing_delimiter: bool = False,
) -> Batch:
    """The Batch `collate` makes of utterances of these lengths (samples) and transcripts, without their
    audio: the rows' frozen features are stored (Batch.audio False). The same padded shape, lengths and targets."""
    n = padded_length(max(samples, default=0), ladder, frame=frame)
    waveforms = torch.zeros(()).expand(len(samples), n)  # one element: the shape crosses the worker queue alone
    batch = with_targets(waveforms, torch.tensor(samples, dtype=torch.long), texts, vocab, trailing_delimiter)
    batch.audio = False
    return batch


def with_targets(
    waveforms: torch.Tensor, lengths: torch.Tensor, texts: Sequence[str], vocab: CharVocab, trailing_delimiter: bool
) -> Batch:
    """A Batch of these padded waveforms (B, N) and lengths (B,), with `texts` encoded as its targets."""
    B = len(texts)
    ids = [vocab.encode(t + " " if trailing_delimiter else t) if vocab is not None else [] for t in texts]
    s = max(1, max((len(t) for t in ids), default=0))
    targets = torch.zeros(B, s, dtype=torch.long)
    for i, t in enumerate(ids):
        targets[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return Batch(
        waveforms=waveforms,
        lengths=lengths,
        targets=targets,
        target_lengths=torch.tensor([len(t) for t in ids], dtype=torch.long),
        texts=list(texts),
        unknown_chars=sum(vocab.count_unknown(t) for t in texts) if vocab is not None else 0,
    )


class Collator:
    """DataLoader collate_fn: Items -> Batch; items that failed to load are left out and listed."""

    def __init__(
        self,
        vocab: CharVocab,
        do_normalize: bool = True,
        ladder: np.ndarray | None = None,
        frame: int = DEFAULT_FRAME,
        trailing_delimiter: bool = False,
    ):
        if trailing_delimiter and vocab is not None and WORD_DELIMITER not in vocab.index:
            raise ValueError(
                f"data.trailing_delimiter: the vocabulary has no {WORD_DELIMITER!r} to end targets "
                f"with ({len(vocab)} tokens); build it with the delimiter, or set it false"
            )
        self.vocab, self.do_normalize, self.ladder, self.frame = vocab, do_normalize, ladder, frame
        self.trailing_delimiter = trailing_delimiter

    def __call__(self, items: Sequence[Item]) -> Batch:
        if items and all(it.samples for it in items):  # SpeechDataset.__getitems__ read no file
            batch = collate_stored(
                [it.samples for it in items],
                [it.text for it in items],
                self.vocab,
                self.ladder,
                frame=self.frame,
                trailing_delimiter=self.trailing_delimiter,
            )
            batch.ids = [it.id for it in items]
            return batch
        good = [it for it in items if it.audio is not None]
        batch = collate(
            [it.audio for it in good],
            [it.text for it in good],
            self.vocab,
            self.do_normalize,
            self.ladder,
            frame=self.frame,
            trailing_delimiter=self.trailing_delimiter,
        )
        batch.ids = [it.id for it in good]
        batch.failures = [(it.reason or "unreadable", it.error) for it in items if it.audio is None]
        batch.notes = [(it.reason, it.error) for it in good if it.reason]
        return batch


class BatchLoader:
    """Iterates a DataLoader of Batches; reports load failures and [UNK] characters, and after a
    complete epoch prints that epoch's counts. Batches left empty by failures are not yielded, unless
    `keep_empty` (under DDP every rank must take part in every step, so the trainer handles them)."""

    keep_empty = False

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        sampler: LengthBucketSampler,
        report: DataReport,
        split: str,
        verbose: bool,
    ):
        self.loader, self.sampler, self.report, self.split, self.verbose = loader, sampler, report, split, verbose

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        seen = failed = unknown = 0
        for batch in self._source():
            for reason, why in batch.failures:  # each failing file named, whichever epoch it first fails in
                self.report.add(self.split, reason, why, name_each=True)
            for reason, why in batch.notes:
                self.report.add(self.split, reason, why)
            if batch.unknown_chars:
                self.report.add(
                    self.split,
                    "unknown_chars",
                    f"{batch.ids[0] if batch.ids else '?'} and others",
                    n=batch.unknown_chars,
                )
            seen, failed, unknown = seen + len(batch.texts), failed + len(batch.failures), unknown + batch.unknown_chars
            if batch.texts or self.keep_empty:
                yield batch
        if self.verbose:  # reached only when the epoch ran to its end
            print(
                f"fastctc data: {self.split} epoch {self.sampler.epoch}: {seen} utterances, {failed} failed to load, "
                f"{unknown} characters mapped to [UNK]; all so far: {self.report.summary(self.split)}",
                file=sys.stderr,  # every data message goes to stderr (the listing's summary and warnings too)
                flush=True,
            )

    def _source(self) -> Iterable[Batch]:
        """This epoch's batches: the DataLoader's; or made here, in this process, when the dataset's frozen-feature
        store holds every utterance of the epoch (SpeechDataset.stored): then no file is read, and a worker's
        hand-off (its shared-memory tensors) would cost more than making the batch."""
        stored = getattr(self.loader.dataset, "stored", None)
        if stored is None or not self.loader.num_workers:
            return self.loader
        batches = list(self.sampler)  # the epoch's, as the DataLoader would draw them (set_epoch fixes them)
        if not batches or (stored.numpy()[[i for b in batches for i in b]] <= 0).any():
            return self.loader
        fetch, collate, pin = self.loader.dataset.__getitems__, self.loader.collate_fn, self.loader.pin_memory
        return (collate(fetch(b)).pin_memory() if pin else collate(fetch(b)) for b in batches)


def make_loader(
    dataset,
    sampler: LengthBucketSampler,
    vocab: CharVocab,
    cfg=None,
    pin_memory: bool = False,
    report: DataReport | None = None,
    split: str = "train",
) -> BatchLoader:
    """A BatchLoader over `dataset` in `sampler`'s batches, with cfg's (a DataConfig) workers,
    prefetch and normalisation. In-memory datasets load in the calling process (nothing to read)."""
    cfg = cfg or DataConfig()
    workers = 0 if dataset.in_memory else cfg.num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collator(
            vocab, cfg.do_normalize, sampler.ladder, frame=sampler.frame, trailing_delimiter=cfg.trailing_delimiter
        ),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=cfg.prefetch_factor if workers else None,
        persistent_workers=workers > 0,
        # its own generator: a DataLoader otherwise draws a base seed from torch's global RNG at every
        # iter(), which would shift dropout and SpecAugment draws after a resume
        generator=torch.Generator().manual_seed(0),
    )
    return BatchLoader(loader, sampler, report or DataReport(), split, verbose=not dataset.in_memory)
