"""The near-duplicate index of one text import: MinHash signatures banded for LSH, held in a few bytes a text.

A million texts must fit next to everything else in a few hundred MB, so nothing per text is a Python object:

- each text's MinHash signature (``num_perm`` 32-bit values, from its shingle hashes) is made for a whole chunk
  at once in numpy and cut into ``bands`` band keys of 64 bits;
- a band's keys of the kept texts are sorted arrays (key, kept number), a few of them, merged as they grow like a
  binary counter (a log-structured merge), so a chunk's queries are ``searchsorted`` calls and adding a chunk costs
  O(log n) a key, amortised: 12 bytes a text a band (9 bands with the defaults: 108 bytes a text);
- a kept text's shingle hashes and source, needed only for the few candidates the bands propose, are appended to a
  file on disk (8 bytes a text in memory: where its record starts).

Each candidate is then measured exactly (the Jaccard similarity of the two shingle sets), as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BATCH_VALUES = 1 << 17  # shingle hashes permuted at once: 128k x 64 permutations x 4 bytes = 32 MB at most
FP_WEIGHT, FN_WEIGHT = 0.1, 0.9  # candidates are measured exactly, so the bands are tuned to miss few
LOOSEST_BANDS_THRESHOLD = 0.85


def _finalise(h: np.ndarray, shifts: tuple[int, int, int], multipliers: tuple[int, int]) -> np.ndarray:
    """xorshift-multiply finaliser (in place on ``h``): every output bit depends on every input bit."""
    kind = h.dtype.type
    h ^= h >> kind(shifts[0])
    h *= kind(multipliers[0])
    h ^= h >> kind(shifts[1])
    h *= kind(multipliers[1])
    h ^= h >> kind(shifts[2])
    return h


def _mix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser: spreads the CRCs' bits before the affine permutations."""
    return _finalise(values.astype(np.uint32), (16, 13, 16), (0x85EBCA6B, 0xC2B2AE35))


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, for band keys."""
    return _finalise(values.copy(), (30, 27, 31), (0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def band_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows a band) that weigh a missed pair 9x a needless candidate, as datasketch's MinHashLSH computes
    them; at least 2 bands (a threshold too high for that gets the bands of 0.85: more candidates, still measured
    against the real threshold)."""
    from datasketch.lsh import _optimal_param

    bands, rows = _optimal_param(threshold, num_perm, FP_WEIGHT, FN_WEIGHT)
    if bands < 2:
        bands, rows = _optimal_param(LOOSEST_BANDS_THRESHOLD, num_perm, FP_WEIGHT, FN_WEIGHT)
    return bands, rows


class Signer:
    """MinHash signatures of many texts at once: affine permutations ``a*h + b mod 2^32`` (``a`` odd, so each is a
    bijection) of the mixed shingle hashes, the minimum of each over a text's shingles."""

    def __init__(self, num_perm: int, seed: int = 1):
        generator = np.random.RandomState(seed)
        self.a = (generator.randint(0, 1 << 31, size=num_perm, dtype=np.uint64) * 2 + 1).astype(np.uint32)
        self.b = generator.randint(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)

    def sign(self, hashes: list[np.ndarray]) -> np.ndarray:
        """(texts, num_perm) uint32 signatures; each text has at least one shingle."""
        out = np.empty((len(hashes), len(self.a)), dtype=np.uint32)
        start = 0
        while start < len(hashes):
            end, values = start, 0
            while end < len(hashes) and (values == 0 or values + len(hashes[end]) <= BATCH_VALUES):
                values += len(hashes[end])
                end += 1
            batch = hashes[start:end]
            mixed = _mix32(np.concatenate(batch))
            permuted = np.multiply.outer(mixed, self.a)
            permuted += self.b
            starts = np.cumsum([0] + [len(h) for h in batch[:-1]])
            out[start:end] = np.minimum.reduceat(permuted, starts, axis=0)
            start = end
        return out


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(texts, bands) uint64: one key per band of ``rows`` signature values; equal bands give equal keys."""
    keys = np.empty((len(signatures), bands), dtype=np.uint64)
    for band in range(bands):
        key = np.full(len(signatures), band + 1, dtype=np.uint64)
        for column in signatures[:, band * rows:(band + 1) * rows].T:
            key = _mix64(key ^ column.astype(np.uint64))
        keys[:, band] = key
    return keys


class SortedRuns:
    """One band's keys of the kept texts, as a few sorted runs of (key, kept number), merged as they grow."""

    def __init__(self):
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, keys: np.ndarray, numbers: np.ndarray) -> None:
        if not len(keys):  # a chunk that kept nothing adds no run
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], numbers[order]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, n1), (k2, n2) = self.runs.pop(-2), self.runs.pop(-1)
            keys_, numbers_ = np.concatenate([k1, k2]), np.concatenate([n1, n2])
            order = np.argsort(keys_, kind="stable")
            self.runs.append((keys_[order], numbers_[order]))

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query positions, kept numbers) of every stored key equal to one of ``keys``."""
        positions, numbers = [], []
        for stored, stored_numbers in self.runs:
            left = np.searchsorted(stored, keys, side="left")
            right = np.searchsorted(stored, keys, side="right")
            counts = right - left
            if not counts.any():
                continue
            hit = np.flatnonzero(counts)
            repeats = counts[hit]
            positions.append(np.repeat(hit, repeats))
            # the stored positions left[h], left[h]+1, ... right[h]-1 for each hit h
            offsets = np.arange(repeats.sum()) - np.repeat(np.cumsum(repeats) - repeats, repeats)
            numbers.append(stored_numbers[np.repeat(left[hit], repeats) + offsets])
        if not positions:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.uint32)
        return np.concatenate(positions), np.concatenate(numbers)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + n.nbytes for k, n in self.runs)


class KeptRecords:
    """Each kept text's shingle hashes and source, appended to a file; where each record starts stays in memory.
    Records of the chunk at work are held until ``flush``."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w+b")
        self.starts = np.zeros(1024, dtype=np.int64)
        self.count = 0
        self.written = 0  # bytes in the file
        self.pending: dict[int, tuple[np.ndarray, str]] = {}

    def add(self, hashes: np.ndarray, source: str) -> int:
        number = self.count
        self.pending[number] = (hashes, source)
        self.count += 1
        return number

    def get(self, number: int) -> tuple[np.ndarray, str]:
        if number in self.pending:
            return self.pending[number]
        start, end = self.starts[number], self.starts[number + 1]
        self.file.seek(start)
        record = self.file.read(end - start)
        size = int(np.frombuffer(record[:4], dtype=np.uint32)[0])
        return np.frombuffer(record[4:4 + 4 * size], dtype=np.uint32), record[4 + 4 * size:].decode("utf-8")

    def flush(self) -> None:
        if not self.pending:
            return
        if self.count + 1 > len(self.starts):
            self.starts = np.concatenate([self.starts, np.zeros(max(len(self.starts), self.count + 1),
                                                                dtype=np.int64)])
        self.file.seek(self.written)
        parts = []
        for number in sorted(self.pending):
            hashes, source = self.pending[number]
            record = np.uint32(len(hashes)).tobytes() + hashes.astype(np.uint32).tobytes() + source.encode("utf-8")
            self.starts[number] = self.written
            self.written += len(record)
            parts.append(record)
        self.starts[self.count] = self.written
        self.file.write(b"".join(parts))
        self.file.flush()
        self.pending.clear()

    def close(self) -> None:
        self.file.close()


class MinHashIndex:
    """The kept texts of one import, for near-duplicate queries chunk by chunk (see the module's docstring)."""

    def __init__(self, threshold: float, num_perm: int, records: Path):
        self.threshold = threshold
        self.bands, self.rows = band_shape(threshold, num_perm)
        self.signer = Signer(num_perm)
        self.tables = [SortedRuns() for _ in range(self.bands)]
        self.records = KeptRecords(records)

    def candidates(self, keys: np.ndarray) -> list[set[int]]:
        """For each row of ``keys`` (a chunk's band keys), the kept numbers sharing a band with it."""
        found: list[set[int]] = [set() for _ in range(len(keys))]
        for band, table in enumerate(self.tables):
            positions, numbers = table.lookup(keys[:, band])
            for position, number in zip(positions.tolist(), numbers.tolist()):
                found[position].add(number)
        return found

    def add(self, keys: np.ndarray, numbers: np.ndarray) -> None:
        for band, table in enumerate(self.tables):
            table.add(keys[:, band].copy(), numbers)
        self.records.flush()

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (the records' file aside)."""
        return sum(t.nbytes for t in self.tables) + self.records.starts.nbytes

    def close(self) -> None:
        self.records.close()
