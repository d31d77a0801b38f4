"""The catalogue over the API: upsert and delete items, upsert users.

Items are validated by the ingest's own row rules and messages
(:func:`Prod.common.items.check_records`, the rules of ``items.csv``), all or nothing: one bad
record is a 422 naming it (``items[3].price``) and nothing is written. An upserted item is
written to Postgres and, in the same transaction's lifetime, embedded with the catalogue's
embedder and upserted into the Chroma ``products`` collection with the document and metadata the
ingest builds (:func:`Prod.common.items.products_rag`, :func:`Prod.common.items.product_metadata`),
so the chat finds it on its next request; ALS learns it at the next retrain (it needs
interactions).

A deleted item is gone at once from Postgres (the item, its interactions, list entries and
suppressions), from ``products`` (chat results) and, through the Redis deleted set of
:mod:`.deleted_items`, from every replica's recommendations, similar items and new lists, though
the loaded model still holds its factor until the next retrain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import redis
from sqlalchemy import Connection, Engine, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from Prod.als_reco_engine.deleted_items import DeletedItems, mark_deleted, unmark_deleted
from Prod.common.db import postgres_errors
from Prod.common.errors import Conflict, InfraError, InvalidInput, ModelNotReady, NotFound
from Prod.common.items import (
    EMBEDDER_KEY,
    ITEM_COLUMN_GROUPS,
    USER_COLUMN_GROUPS,
    BadRow,
    Embed,
    Product,
    check_records,
    collection_metadata,
    content_hash,
    embedder_function,
    embedding_text,
    product_metadata,
    products_rag,
    vectors_id,
)
from Prod.common.models import Interaction, Item, SuppressedItem, User
from Prod.common.models import RecommendationListItem as ListItem
from Prod.common.stores import chroma_errors

ITEM_COLUMNS = ITEM_COLUMN_GROUPS.required + ITEM_COLUMN_GROUPS.optional
USER_COLUMNS = USER_COLUMN_GROUPS.required + USER_COLUMN_GROUPS.optional
SHOWN = 20  # bad records / ids one error message lists


# --- validation (the ingest's rules) ----------------------------------------------------------


def _as_text(value: Any) -> str:
    """A JSON value as a CSV field would hold it: "" for unknown."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_FIRST_ON_LINE = re.compile(r"\(first on line (\d+)\)")


def _problems(bad_rows: list[BadRow], what: str, columns: Sequence[str], batch: bool) -> list[dict]:
    """``[{"field", "message"}]`` per reason of each bad record; the field is the column the
    ingest's reason starts with (``price -1 must be >= 0`` -> ``items[3].price``)."""
    fields = []
    for bad in bad_rows:
        for reason in bad.reason.split("; "):
            reason = _FIRST_ON_LINE.sub(rf"(first at {what}[\1])", reason)
            # "price -1 must be >= 0", "duplicate item_id 'x' ...": the column comes first or second
            column = next((w for w in reason.split(" ")[:2] if w in columns), "")
            where = f"{what}[{bad.line}]" if batch else ""
            name = f"{where}.{column}" if where and column else (where or column or "body")
            fields.append({"field": name, "message": reason})
    return fields


def validate_records(kind: str, records: list[dict[str, Any]], *, batch: bool) -> pd.DataFrame:
    """The good rows of ``records`` (``kind``: ``items`` or ``users``) typed and cleaned as the
    ingest loads them; InvalidInput naming every bad record's field when one is bad."""
    columns = ITEM_COLUMNS if kind == "items" else USER_COLUMNS
    frame = pd.DataFrame(
        {c: [_as_text(r.get(c)) for r in records] for c in columns}, dtype=object, columns=columns
    )
    good, bad_rows = check_records(kind, frame)
    if bad_rows:
        fields = _problems(bad_rows, kind, columns, batch)
        shown = "; ".join(
            f"{f['field']}: {f['message']}" if f["field"] != "body" else f["message"]
            for f in fields[:SHOWN]
        )
        more = f"; ... and {len(fields) - SHOWN} more" if len(fields) > SHOWN else ""
        raise InvalidInput(
            f"{len(bad_rows)} bad {kind[:-1]} record(s); nothing was written: {shown}{more}",
            fields=fields,
        )
    return good


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as dicts with NaN as None (what Postgres stores for unknown)."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in rows:
        if "rating_count" in row and row["rating_count"] is not None:
            row["rating_count"] = int(row["rating_count"])
    return rows


# --- stores -----------------------------------------------------------------------------------


@contextmanager
def redis_errors(what: str):
    """A Redis failure as :class:`InfraError` (HTTP 503 naming the store)."""
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        raise InfraError(
            f"Redis is unavailable ({what}); try again shortly", store="redis"
        ) from exc


def products_collection(chroma_client, name: str, embedder_id: str | None = None):
    """The ``products`` collection (created as the ingest creates it when missing). Conflict
    when it holds vectors of another embedder: one collection never mixes two vector spaces."""
    wanted = vectors_id(embedder_id)
    with chroma_errors():
        collection = chroma_client.get_or_create_collection(
            name, metadata=collection_metadata(wanted)
        )
    recorded = (collection.metadata or {}).get(EMBEDDER_KEY)
    if wanted is not None and recorded is not None and recorded != wanted:
        raise Conflict(
            f"collection {name!r} holds vectors of {recorded}, this service embeds with {wanted}; "
            "re-run the Chroma ingest with this embedder first",
            collection=name,
        )
    return collection


def load_catalogue_embedder(configured: str, batch_size: int = 64) -> Embed:
    """The ingest's embedder (MiniLM by default), loaded once per process on first use."""
    from Prod.common.embeddings import load_embedder

    try:
        return embedder_function(load_embedder(configured), batch_size)
    except Exception as exc:  # a missing model folder or a broken backend: 503, not 500
        raise ModelNotReady(f"embedding model unavailable: {type(exc).__name__}: {exc}") from exc


# --- items ------------------------------------------------------------------------------------


def upsert_items(
    *,
    db: Engine,
    redis_client: redis.Redis,
    collection_of: Callable[[str | None], Any],
    embed: Embed,
    deleted: DeletedItems,
    items: list[dict[str, Any]],
    batch: bool,
) -> dict[str, Any]:
    """Create or replace ``items`` (``ItemIn`` dicts; a field left out is unknown, as an empty
    CSV field): validated first, then embedded, then Postgres and ``products`` together.

    ``collection_of(embedder_id)`` returns the ``products`` collection. A Chroma failure rolls
    the Postgres transaction back; a re-sent request is idempotent.
    """
    frame = validate_records("items", items, batch=batch)
    rows = _rows(frame)
    records = products_rag(frame)
    products = [Product(r["item_id"], r["text"], r["metadata"], n) for n, r in enumerate(records)]
    vectors = np.asarray(embed([embedding_text(p.text) for p in products]), dtype=np.float32)
    collection = collection_of(getattr(embed, "embedder_id", None))
    item_ids = [row["item_id"] for row in rows]
    restored = [i for i in item_ids if i in deleted]
    columns = [c for c in ITEM_COLUMNS if c != "item_id"]
    statement = pg_insert(Item).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[Item.item_id],
        set_={**{c: statement.excluded[c] for c in columns}, "updated_at": func.now()},
    )
    with postgres_errors("the item catalogue"), db.begin() as conn:
        existing = set(conn.scalars(select(Item.item_id).where(Item.item_id.in_(item_ids))))
        conn.execute(statement)
        with chroma_errors():
            collection.upsert(
                ids=item_ids,
                embeddings=vectors,
                documents=[p.text for p in products],
                metadatas=[product_metadata(p, content_hash(p)) for p in products],
            )
        if restored:
            with redis_errors("deleted items"):
                pipe = redis_client.pipeline(transaction=True)  # one slot: {catalogue}
                unmark_deleted(pipe, restored)
                pipe.execute()
    deleted.apply(restored=restored)
    return {
        "created": [i for i in item_ids if i not in existing],
        "updated": [i for i in item_ids if i in existing],
        "embedded": len(products),
        "collection": collection.name,
    }


def delete_items(
    *,
    db: Engine,
    redis_client: redis.Redis,
    collection_of: Callable[[], Any | None],
    deleted: DeletedItems,
    in_model: Callable[[str], bool],
    item_ids: list[str],
) -> dict[str, Any]:
    """Delete items everywhere (see the module docstring); NotFound naming the ids no store
    knows (nothing is deleted then). An id Postgres lost but another store still holds (a
    deletion interrupted by an outage) is accepted, so a retry finishes the job.

    ``collection_of()`` returns the ``products`` collection or None when there is none;
    ``in_model(item_id)``: whether the serving index (or popularity table) holds the item.
    """
    item_ids = list(dict.fromkeys(item_ids))
    collection = collection_of()
    with postgres_errors("the item catalogue"), db.begin() as conn:
        in_postgres = set(conn.scalars(select(Item.item_id).where(Item.item_id.in_(item_ids))))
        in_products = set()
        if collection is not None:
            with chroma_errors():
                in_products = set(collection.get(ids=item_ids, include=[])["ids"])
        served = {i for i in item_ids if in_model(i) and i not in deleted}
        unknown = [i for i in item_ids if i not in in_postgres | in_products | served]
        if unknown:
            raise NotFound(
                f"unknown item(s) (or already deleted): {', '.join(unknown[:SHOWN])}; "
                "nothing was deleted",
                unknown_items=unknown,
            )
        counts = _delete_item_rows(conn, item_ids)
        with redis_errors("deleted items"):
            pipe = redis_client.pipeline(transaction=True)  # one slot: {catalogue}
            mark_deleted(pipe, item_ids)
            pipe.execute()
        if in_products:
            with chroma_errors():
                collection.delete(ids=sorted(in_products))
    deleted.apply(deleted=item_ids)
    return {"deleted": item_ids, **counts, "products": len(in_products)}


_RENUMBER_LISTS = text(
    """
    update recommendation_list_item l set position = r.position
    from (select user_id, item_id,
                 row_number() over (partition by user_id order by position) as position
          from recommendation_list_item where user_id = any(:user_ids)) r
    where l.user_id = r.user_id and l.item_id = r.item_id
    """
)


def _delete_item_rows(conn: Connection, item_ids: list[str]) -> dict[str, int]:
    """Delete the items and everything referring to them; lists renumbered 1..n."""
    list_users = conn.scalars(
        delete(ListItem).where(ListItem.item_id.in_(item_ids)).returning(ListItem.user_id)
    ).all()
    if list_users:
        conn.execute(_RENUMBER_LISTS, {"user_ids": sorted(set(list_users))})
    suppressions = conn.execute(
        delete(SuppressedItem).where(SuppressedItem.item_id.in_(item_ids))
    ).rowcount
    interactions = conn.execute(
        delete(Interaction).where(Interaction.item_id.in_(item_ids))
    ).rowcount
    items = conn.execute(delete(Item).where(Item.item_id.in_(item_ids))).rowcount
    return {
        "items": items,
        "interactions": interactions,
        "list_entries": len(list_users),
        "suppressions": suppressions,
    }


# --- users ------------------------------------------------------------------------------------


def upsert_users(*, db: Engine, users: list[dict[str, Any]], batch: bool) -> dict[str, Any]:
    """Create users or replace their name, by the ingest's ``users.csv`` rules, all or nothing."""
    rows = _rows(validate_records("users", users, batch=batch))
    user_ids = [row["user_id"] for row in rows]
    statement = pg_insert(User).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[User.user_id], set_={"name": statement.excluded.name}
    )
    with postgres_errors("the user table"), db.begin() as conn:
        existing = set(conn.scalars(select(User.user_id).where(User.user_id.in_(user_ids))))
        conn.execute(statement)
    return {
        "created": [u for u in user_ids if u not in existing],
        "updated": [u for u in user_ids if u in existing],
    }
