"""One vocabulary across the services (issue 15, item 3): the shared product shape and id rule
as the OpenAPI documents show them, scores documented per strategy, examples that validate."""

from __future__ import annotations

import inspect
import re

import pytest
from pydantic import BaseModel

from Prod.als_reco_engine import schemas as als_schemas
from Prod.als_trainer import schemas as trainer_schemas
from Prod.chat_reco_engine import schemas as chat_schemas
from Prod.common import schemas as common_schemas
from Prod.common.schemas import ID_PATTERN, Product


@pytest.fixture(scope="module")
def openapi(settings) -> dict[str, dict]:
    """Each service's OpenAPI document (built without the lifespans: no model needed)."""
    from Prod.als_reco_engine.main import create_app as reco_app
    from Prod.als_trainer.main import create_app as trainer_app
    from Prod.chat_reco_engine.main import create_app as chat_app

    apps = {"reco": reco_app(settings), "chat": chat_app(settings)}
    apps["trainer"] = trainer_app(settings, schedule=False)
    return {name: app.openapi() for name, app in apps.items()}


def _schema(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def test_products_have_one_shape_in_the_als_engine_and_the_chat(openapi):
    shared = Product.model_fields.keys()
    als = _schema(openapi["reco"], "ScoredItem")["properties"]
    chat = _schema(openapi["chat"], "ProductOut")["properties"]
    for name in shared:  # same name, same type and description on both sides
        assert als[name].get("description") == chat[name].get("description"), name
        if name != "title":  # the chat always has a title (the item id when unknown)
            assert als[name].get("anyOf") == chat[name].get("anyOf"), name
    assert "rating" not in chat and "avg_rating" in chat
    assert list(chat)[: len(shared)] == list(als)[: len(shared)] == list(shared)


def test_one_id_rule_for_users_and_items(openapi):
    reco, chat = openapi["reco"], openapi["chat"]
    patterns = {
        _schema(reco, "InteractionIn")["properties"]["user_id"]["pattern"],
        _schema(reco, "InteractionIn")["properties"]["item_id"]["pattern"],
        _schema(chat, "ChatRequest")["properties"]["user_id"]["anyOf"][0]["pattern"],
    }
    for document, path in (
        (reco, "/api/v1/recommend/{user_id}"),
        (reco, "/api/v1/similar/{item_id}"),
        (chat, "/api/v1/search"),
    ):
        for param in document["paths"][path]["get"]["parameters"]:
            if param["name"] in ("user_id", "item_id"):
                schema = param["schema"]
                patterns.add(schema.get("pattern") or schema["anyOf"][0]["pattern"])
    assert patterns == {ID_PATTERN}


def test_filters_are_the_same_query_parameters_wherever_the_catalogue_is_filtered(openapi):
    def filters(document: dict, path: str) -> dict:
        params = document["paths"][path]["get"]["parameters"]
        names = ("category", "brand", "min_price", "max_price", "min_rating")
        return {p["name"]: p["schema"] for p in params if p["name"] in names}

    recommend = filters(openapi["reco"], "/api/v1/recommend/{user_id}")
    assert len(recommend) == 5
    assert filters(openapi["reco"], "/api/v1/similar/{item_id}") == recommend
    assert filters(openapi["chat"], "/api/v1/search") == recommend


def test_scores_say_what_they_are_for_each_strategy(openapi):
    score = _schema(openapi["reco"], "ScoredItem")["properties"]["score"]["description"]
    for strategy in ("als:", "fold_in:", "popular:", "/similar:"):
        assert strategy in score
    assert "within one answer" in score
    similar = _schema(openapi["reco"], "SimilarOut")["properties"]["items"]["description"]
    assert "cosine" in similar
    chat = _schema(openapi["chat"], "ProductOut")["properties"]["score"]["description"]
    assert "[0, 1]" in chat and "within one answer" in chat


def _models_with_examples():
    for module in (als_schemas, chat_schemas, trainer_schemas, common_schemas):
        for name, model in inspect.getmembers(module, inspect.isclass):
            if issubclass(model, BaseModel) and model.__module__ == module.__name__:
                extra = model.model_config.get("json_schema_extra") or {}
                for n, example in enumerate(extra.get("examples", [])):
                    yield pytest.param(model, example, id=f"{name}-{n}")


@pytest.mark.parametrize(("model", "example"), list(_models_with_examples()))
def test_openapi_examples_are_valid(model, example):
    model.model_validate(example)


def test_every_documented_example_value_validates(openapi):
    """Parameter and request-body examples too (``examples=`` / ``openapi_examples=``)."""
    checked = 0
    for document in openapi.values():
        for path_item in document["paths"].values():
            for operation in path_item.values():
                for param in operation.get("parameters", []):
                    schema = param["schema"]
                    pattern = schema.get("pattern")
                    for value in schema.get("examples", []):
                        if pattern:
                            assert re.fullmatch(pattern, value), (param["name"], value)
                            checked += 1
    examples = openapi["reco"]["paths"]["/api/v1/interactions"]["post"]["requestBody"]
    for example in examples["content"]["application/json"]["examples"].values():
        value = example["value"]
        model = als_schemas.InteractionBatch if "events" in value else als_schemas.InteractionIn
        model.model_validate(value)
        checked += 1
    assert checked >= 6
