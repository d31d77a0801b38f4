"""Approximate top-k for large catalogues: faiss indexes over the serving model's item factors,
built in a background thread after each version switch (the exact scan of :mod:`.index` serves
until they are ready).

Index: IVF with 4-bit fast-scan PQ, one sub-quantizer per dimension (``IVF{nlist},PQ{dim}x4fs``,
inner product; 32 bytes an item at 64 factors). A query scans ``PROBE_SHARE`` of the lists for
``CANDIDATES`` items, which are re-scored exactly on the engine's float32 factors: returned
scores are exact, only recall is approximate. Measured on ``reco bench serving``'s clustered
1M x 64 model: recall@10 0.995 with 1,000 candidates (0.988 with 500); HNSW reached 0.988 at
efSearch 128 but took 49 s to build for 200k items on one core; IVF-SQ8 needed 1.3 ms a query
for the same recall.

Seen, hidden and deleted items and the filters stay exact: candidates failing them are dropped
and the search fetches ``1 / share`` more when a filter keeps only ``share`` of the items. A filter
keeping fewer items than the search would scan anyway (``PROBE_SHARE`` of the catalogue), a fetch
beyond ``MAX_FETCH`` (thousands of exclusions) or probed lists holding fewer than k passing items
are answered by an exact scan over the items that pass (:func:`exact_subset_top_k`), so a very
selective filter costs a scan of what it keeps, never recall.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import faiss
import numpy as np

from Prod.als_reco_engine.index import ItemIndex, top_k
from Prod.common.logs import get_logger

log = get_logger(__name__)
# one thread: a query is one small scan, and OpenMP workers spin against the request loop
# (training 5k items took 2.7 s on 2 threads of a busy 2-core machine, 0.5 s on 1)
faiss.omp_set_num_threads(1)

PROBE_SHARE = 1 / 16  # of the lists scanned a query: recall@10 0.995 at 1M (1/32: 0.90)
CANDIDATES = 1000  # re-scored exactly per query (~30 us); 500 gave recall@10 0.988 at 1M
MAX_FETCH = 16_384  # over-fetch for a filter beyond this: the exact scan of what it keeps
TRAIN_PER_LIST = 40  # k-means sample: 40 items a list (faiss warns below 39), 10 iterations
TRAIN_MIN = 1000  # the 4-bit codebooks (16 levels a dimension) want >= 624 training points
KMEANS_ITERATIONS = 10


def list_count(n_items: int) -> int:
    """IVF lists for a catalogue: sqrt(n)/2, at least 40 items each (512 at 1M: of 256-2048
    measured, as good at the same share scanned, and the assignment of every item costs n x
    lists)."""
    return max(1, min(round(math.sqrt(n_items) / 2), n_items // TRAIN_PER_LIST))


@dataclass(frozen=True)
class AnnIndex:
    """A faiss index over (n, dim) float32 ``vectors`` (inner product), with its build figures."""

    index: faiss.Index
    nprobe: int
    build_s: float
    nbytes: int

    @classmethod
    def build(cls, vectors: np.ndarray, seed: int = 0) -> AnnIndex:
        """Train the lists and the 4-bit codes on a sample, then add every row (row = id)."""
        started = time.perf_counter()
        n, dim = vectors.shape
        nlist = list_count(n)
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{dim}x4fs", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = min(n, max(nlist * TRAIN_PER_LIST, TRAIN_MIN))
        index.train(vectors[np.sort(rng.choice(n, sample, replace=False))])
        index.add(vectors)
        # at least CANDIDATES items' worth of lists: fewer would leave re-scoring slots empty
        # (a catalogue just above the threshold is then scanned whole; 100k and 1M are unchanged)
        nprobe = min(nlist, max(math.ceil(nlist * PROBE_SHARE), math.ceil(nlist * CANDIDATES / n)))
        ivf.nprobe = nprobe
        nbytes = int(faiss.serialize_index(index).size)
        return cls(index, nprobe, time.perf_counter() - started, nbytes)

    def candidates(self, query: np.ndarray, n: int) -> np.ndarray:
        """Rows of about the ``n`` best items for ``query`` (dim,) by approximate inner product."""
        _, found = self.index.search(query.reshape(1, -1), min(n, self.index.ntotal))
        rows = found[0]
        return rows[rows >= 0]


def exact_subset_top_k(
    vectors: np.ndarray, query: np.ndarray, k: int, excluded: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over the rows passing ``mask`` and not ``excluded``: a scan of those rows
    only when the filter keeps under half (a selective filter costs what it keeps), else of
    every row (a gather of most rows costs more than the mat-vec it saves)."""
    if mask is None or 2 * np.count_nonzero(mask) > len(vectors):
        return top_k(vectors @ query, k, excluded, mask)
    keep = mask.copy()
    keep[excluded] = False
    rows = np.flatnonzero(keep)
    found, best = top_k(vectors[rows] @ query, k)
    return rows[found], best


def ann_top_k(
    ann: AnnIndex,
    vectors: np.ndarray,
    query: np.ndarray,
    k: int,
    excluded: np.ndarray,
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``vectors @ query`` skipping ``excluded`` rows and rows outside ``mask``,
    from the ANN candidates re-scored exactly; exact over the passing rows when the candidates
    cannot hold k of them (see the module docstring). Same contract as :func:`.index.top_k`."""
    n = len(vectors)
    kept = n if mask is None else int(np.count_nonzero(mask))
    fetch = math.ceil(max(CANDIDATES, 4 * (k + excluded.size)) * n / max(kept, 1))
    if kept < n * PROBE_SHARE or fetch > MAX_FETCH:
        return exact_subset_top_k(vectors, query, k, excluded, mask)
    rows = ann.candidates(query, fetch)
    passing = np.ones(rows.size, dtype=bool) if mask is None else mask[rows]
    if excluded.size:
        passing &= ~np.isin(rows, excluded)
    rows = rows[passing]
    if rows.size < min(k, kept - excluded.size):  # the lists probed hold too few: be exact
        return exact_subset_top_k(vectors, query, k, excluded, mask)
    found, best = top_k(vectors[rows] @ query, k)
    return rows[found], best


@dataclass(frozen=True)
class AnnPair:
    """The ANN indexes of one :class:`ItemIndex`: inner product (recommend) and cosine
    (similar, over the unit factors); ``similar`` is None while it is still being built."""

    item_index: ItemIndex
    recommend: AnnIndex
    similar: AnnIndex | None = None


class AnnIndexes:
    """Builds the ANN indexes of the serving :class:`ItemIndex` in one background thread.

    :meth:`switch` (called on every version switch) returns at once; the thread builds the newest
    index asked for and drops a build overtaken by a newer switch. :meth:`get` answers only for
    the exact ``ItemIndex`` object a request holds, so an answer never mixes two versions.
    ``min_items`` 0 turns ANN off.
    """

    def __init__(self, min_items: int) -> None:
        self.min_items = min_items
        self.current: AnnPair | None = None
        self.last_error: str | None = None
        self._wanted: ItemIndex | None = None
        self._building: ItemIndex | None = None
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def enabled_for(self, index: ItemIndex | None) -> bool:
        return index is not None and self.min_items > 0 and len(index) >= self.min_items

    def get(self, index: ItemIndex) -> AnnPair | None:
        pair = self.current
        return pair if pair is not None and pair.item_index is index else None

    def switch(self, index: ItemIndex) -> None:
        """Build ``index``'s ANN indexes in the background when it is large enough."""
        with self._wake:
            self._wanted = index if self.enabled_for(index) else None
            if self._wanted is None:
                self.current = None
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ann-builder", daemon=True)
                self._thread.start()
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (
                    self._wanted is None or self._wanted is self._served()
                ):
                    self._wake.wait()
                if self._stopped:
                    return
                index = self._building = self._wanted
            try:
                self._build(index)
            except Exception as exc:  # keep serving exact; a new version retries
                self.last_error = f"cannot build the ANN index of {index.version}: {exc}"
                log.warning(self.last_error)
                with self._wake:
                    if self._wanted is index:
                        self._wanted = None
            finally:
                self._building = None

    def _served(self) -> ItemIndex | None:
        return self.current.item_index if self.current is not None else None

    def _build(self, index: ItemIndex) -> None:
        recommend = AnnIndex.build(index.factors)
        if not self._publish(AnnPair(index, recommend)):
            return
        log.info(
            "ANN index of %s ready: %d items in %.1f s, %.0f MB",
            index.version,
            len(index),
            recommend.build_s,
            recommend.nbytes / 2**20,
        )
        self._publish(AnnPair(index, recommend, AnnIndex.build(index.unit_factors)))

    def _publish(self, pair: AnnPair) -> bool:
        with self._wake:
            if self._wanted is not pair.item_index:
                return False  # overtaken by a newer switch
            self.current = pair
            self.last_error = None
            return True

    def status(self, index: ItemIndex | None) -> dict:
        """``state``: off (below ANN_MIN_ITEMS or disabled), building, ready."""
        pair = self.get(index) if index is not None else None
        if not self.enabled_for(index):
            state = "off"
        elif pair is None or pair.similar is None:
            state = "building"
        else:
            state = "ready"
        return {
            "state": state,
            "min_items": self.min_items,
            "recommend": _figures(pair.recommend if pair else None),
            "similar": _figures(pair.similar if pair else None),
            "last_error": self.last_error,
        }


def _figures(ann: AnnIndex | None) -> dict | None:
    if ann is None:
        return None
    return {"build_s": round(ann.build_s, 2), "bytes": ann.nbytes, "nprobe": ann.nprobe}
