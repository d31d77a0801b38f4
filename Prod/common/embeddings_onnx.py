"""The ONNX backends of :mod:`Prod.common.embeddings`: export, fusion, int8 quantisation, runtime.

A mean-pooling sentence-transformers model is traced to ONNX (fp32) once, offline, from its local
weights; onnxruntime's transformer optimiser fuses each layer's attention and the embeddings; the
``onnx-int8`` backend then quantises the weights (dynamic, per channel, full range so
avx512_vnni/AMX int8 kernels apply). The files live in a user cache folder
(``$RECO_EMBEDDING_CACHE``, else ``$XDG_CACHE_HOME/reco-platform/embeddings``), never in the
repository, keyed by the weights, :data:`~Prod.common.embeddings.EXPORT_RECIPE` and the library
versions. A loaded export must reproduce PyTorch's vectors on probe sentences (:func:`load_onnx`
raises otherwise, and the caller falls back to ``torch``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from Prod.common.embeddings import (
    EXPORT_RECIPE,
    MAX_SEQ_LENGTH,
    make_embedder_id,
    model_label,
    resolve_model_path,
)
from Prod.common.hub import prefer_offline_hub
from Prod.common.logs import get_logger

log = get_logger(__name__)

_PROBE_TEXTS = (
    "Stainless steel espresso machine with milk frother. Brand: Brewista.",
    "Lightweight trail running shoes for muddy paths",
    "a cosy wool blanket",
)
# vectors of an ONNX export must agree with PyTorch's on the probes, else torch is used
_MIN_PROBE_COSINE = {"onnx": 0.999, "onnx-int8": 0.98}
# fused SkipLayerNormalization (residual Add + LayerNorm) ran ~3x slower than the two ops it
# replaces (avx512 Xeon, onnxruntime 1.31)
_SLOW_FUSIONS = ["SkipLayerNormFusion"]


def cache_root() -> Path:
    """Where exported ONNX models live (outside the repository)."""
    configured = os.environ.get("RECO_EMBEDDING_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reco-platform" / "embeddings"


class OnnxEmbedder:
    """Tokenizer + onnxruntime session + mean pooling: a drop-in for ``SentenceTransformer``
    where :func:`~Prod.common.embeddings.embed_texts` is concerned.

    Every text runs alone (a (1, tokens) input, no padding), one run per core at a time: int8
    activations are quantised per run (one scale per tensor), so a text run beside others (or
    beside padding) would get a vector that depends on them.
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


def load_onnx(configured: str, backend: str) -> OnnxEmbedder:
    """The ``onnx`` or ``onnx-int8`` embedder of a model, exported and quantised on first use.

    Raises when the model cannot be exported or its vectors disagree with PyTorch's.
    """
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
        EXPORT_RECIPE,
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
            "recipe": EXPORT_RECIPE,
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
    """onnxruntime's transformer optimiser: each layer's attention becomes one Attention op and
    the embeddings one EmbedLayerNormalization (~10% more texts per second on two cores).

    BERT-type models only (MiniLM is one); another architecture keeps the traced graph. The
    residual + LayerNorm and bias + GELU fusions are left out as slower (see ``_SLOW_FUSIONS``).
    """
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
