"""The canonical dataset format's names: files, columns, interaction events and their weights.

Runtime code reads them (event validation and weights in the services, the feedback rule) and so
does the dataset tooling in :mod:`Prod.datasets` (writer, generator, importers, ingest), which is
why they live in the runtime package and the writer does not. The format itself:
:mod:`Prod.datasets.canonical` and docs/ARCHITECTURE.md.
"""

from __future__ import annotations

USERS_FILE = "users.csv"
ITEMS_FILE = "items.csv"
INTERACTIONS_FILE = "interactions.csv"
RAG_FILE = "ProductsRAG.json"
DATASET_FILES = (USERS_FILE, ITEMS_FILE, INTERACTIONS_FILE, RAG_FILE)

USER_COLUMNS = ["user_id", "name"]
ITEM_COLUMNS = [
    "item_id",
    "title",
    "brand",
    "category",
    "price",
    "avg_rating",
    "rating_count",
    "description",
    "image_url",
]
INTERACTION_COLUMNS = ["user_id", "item_id", "event", "rating", "weight", "timestamp"]
REQUIRED_COLUMNS = {
    USERS_FILE: ["user_id"],
    ITEMS_FILE: ["item_id", "title"],
    INTERACTIONS_FILE: ["user_id", "item_id", "event", "weight", "timestamp"],
}

# implicit (positive) events and their default confidence weights
EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
RATING_EVENT = "rating"  # weighs its rating; below settings.negative_rating_below: negative
DISLIKE_EVENT = "dislike"  # "not this": negative feedback (the rule: Prod/common/feedback.py)
# stored weight of a dislike (the column is > 0 everywhere); never read as confidence
DISLIKE_WEIGHT = 1.0
# the weight an event gets when it comes without one (a rating weighs its rating)
DEFAULT_WEIGHTS: dict[str, float] = {**EVENT_WEIGHTS, DISLIKE_EVENT: DISLIKE_WEIGHT}
EVENTS = (*EVENT_WEIGHTS, RATING_EVENT, DISLIKE_EVENT)
RAG_METADATA_KEYS = ("title", "brand", "category", "price", "avg_rating", "rating_count")
MAX_ID_LENGTH = 128
