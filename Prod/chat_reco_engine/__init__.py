"""Conversational recommender: RAG with filters, reranking, ALS personalisation, Ollama LLM."""

from Prod.chat_reco_engine.main import create_app

__all__ = ["create_app"]
