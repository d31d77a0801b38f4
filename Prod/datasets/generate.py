"""Deterministic generator of the default dataset: a realistic demo store.

The store has several categories, each with its own brands (budget, mid-range and premium tiers),
product types, price distribution (log-normal) and readable, template-built titles and
descriptions. Users have latent tastes, so a recommender has real signal to learn:

- category preferences: a sparse Dirichlet draw mixed with the store-wide category shares;
- a price level matched against brand tiers, and a favourite brand per category (loyalty);
- an activity level (log-normal), giving a long tail of interactions per user.

Item popularity is log-normal (a long tail) and rises with latent quality. Each sampled
(user, item) visit yields a view and, through a funnel, click, add_to_cart and purchase events,
timestamped over ``days`` days with weekly and daily rhythms. Everything is vectorised numpy and
seeded: the same arguments give byte-identical files.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from Prod.common.canonical_format import EVENT_WEIGHTS
from Prod.common.errors import InvalidInput
from Prod.datasets.canonical import write_dataset

DEFAULT_USERS = 3000
DEFAULT_ITEMS = 2000
DEFAULT_INTERACTIONS = 100_000
DEFAULT_SEED = 42
END_DATE = np.datetime64("2025-06-30T00:00:00", "s")  # fixed, so output never depends on today

EVENTS_IN_FUNNEL = ("view", "click", "add_to_cart", "purchase")
_CHUNK_VISITS = 1_000_000
# funnel: P(click | view) for taste-driven / exploring visits, P(cart | click), P(buy | cart)
_CLICK_RATE, _EXPLORE_CLICK_RATE, _CART_RATE, _BUY_RATE = 0.38, 0.2, 0.3, 0.55

# name, share of the catalogue, price spread (sigma of log-price around the type's median)
_CATEGORIES: list[tuple[str, float, float]] = [
    ("Electronics", 0.17, 0.55),
    ("Home & Kitchen", 0.16, 0.5),
    ("Sports & Outdoors", 0.12, 0.5),
    ("Books", 0.13, 0.25),
    ("Beauty & Personal Care", 0.11, 0.4),
    ("Toys & Games", 0.10, 0.45),
    ("Clothing", 0.12, 0.4),
    ("Pet Supplies", 0.09, 0.45),
]

# per category: brand (tier -1 budget, 0 mid, 1 premium)
_BRANDS: dict[str, list[tuple[str, int]]] = {
    "Electronics": [
        ("Voltix", 0),
        ("Nordavia", 1),
        ("Kestrel Audio", 1),
        ("Brightwave", -1),
        ("Zento", 0),
        ("Lumora", 1),
        ("PixelPeak", -1),
        ("Corvel", 0),
    ],
    "Home & Kitchen": [
        ("Hearthstone", 0),
        ("CopperLeaf", 1),
        ("Homely", -1),
        ("Maison Ardent", 1),
        ("Kitchara", 0),
        ("BasicNest", -1),
        ("Oakhaven", 0),
    ],
    "Sports & Outdoors": [
        ("Trailforge", 0),
        ("Summit Ridge", 1),
        ("Pacefield", 0),
        ("IronPulse", -1),
        ("Alpenglow", 1),
        ("Riverbend", -1),
    ],
    "Books": [
        ("Harbor Press", 0),
        ("Lantern House", 0),
        ("Greyfield Books", 1),
        ("Pocket Quill", -1),
        ("Meridian Publishing", 0),
        ("Open Shelf", -1),
    ],
    "Beauty & Personal Care": [
        ("Velisse", 1),
        ("PureBloom", 0),
        ("Glowday", -1),
        ("Maren & Co", 1),
        ("Dermalyn", 0),
        ("Softleaf", -1),
    ],
    "Toys & Games": [
        ("BrickBurst", 0),
        ("Wonderloop", 0),
        ("Tiny Titans", -1),
        ("Clever Fox", 1),
        ("PlayNest", -1),
        ("Starlight Games", 0),
    ],
    "Clothing": [
        ("Northmile", 0),
        ("Urban Thread", -1),
        ("Atelier Rowe", 1),
        ("Bayline", 0),
        ("Cottonfield", -1),
        ("Fjordwear", 1),
    ],
    "Pet Supplies": [
        ("Happy Paws", -1),
        ("Pawsome", 0),
        ("Whisker & Tail", 1),
        ("Furlough", 0),
        ("BarkBox Basics", -1),
    ],
}

# per category: product type, its features, what it is for
_TYPES: dict[str, list[tuple[str, list[str], str]]] = {
    "Electronics": [
        (
            "Wireless Earbuds",
            [
                "active noise cancelling",
                "a 30-hour battery",
                "IPX5 sweat resistance",
                "touch controls",
                "a pocket-sized charging case",
            ],
            "music and calls",
        ),
        (
            "Bluetooth Speaker",
            [
                "360-degree sound",
                "a 20-hour battery",
                "a waterproof shell",
                "deep bass",
                "multi-speaker pairing",
            ],
            "parties and travel",
        ),
        (
            "Smartwatch",
            [
                "heart-rate tracking",
                "built-in GPS",
                "sleep tracking",
                "a bright AMOLED display",
                "a week of battery life",
            ],
            "fitness and daily use",
        ),
        (
            "Mechanical Keyboard",
            [
                "hot-swappable switches",
                "RGB backlighting",
                "a compact layout",
                "PBT keycaps",
                "USB-C connectivity",
            ],
            "typing and gaming",
        ),
        (
            "4K Monitor",
            [
                "a 27-inch IPS panel",
                "HDR support",
                "a 144 Hz refresh rate",
                "USB-C power delivery",
                "a height-adjustable stand",
            ],
            "work and play",
        ),
        (
            "Power Bank",
            [
                "20,000 mAh capacity",
                "fast charging",
                "two USB-C ports",
                "a slim aluminium body",
                "pass-through charging",
            ],
            "charging on the go",
        ),
        (
            "Webcam",
            [
                "1080p video",
                "autofocus",
                "dual microphones",
                "low-light correction",
                "a privacy shutter",
            ],
            "video calls",
        ),
    ],
    "Home & Kitchen": [
        (
            "Chef's Knife",
            [
                "a high-carbon steel blade",
                "a full tang",
                "an ergonomic handle",
                "a razor-sharp edge",
                "balanced weight",
            ],
            "everyday cooking",
        ),
        (
            "Nonstick Frying Pan",
            [
                "a ceramic coating",
                "even heat distribution",
                "an oven-safe handle",
                "induction compatibility",
                "PFOA-free materials",
            ],
            "eggs, pancakes and stir-fries",
        ),
        (
            "Coffee Grinder",
            [
                "conical burrs",
                "15 grind settings",
                "a quiet motor",
                "an easy-clean chamber",
                "a timer",
            ],
            "fresh coffee every morning",
        ),
        (
            "Air Fryer",
            [
                "a 5-quart basket",
                "8 cooking presets",
                "a digital touchscreen",
                "dishwasher-safe parts",
                "rapid air circulation",
            ],
            "crispy, healthier meals",
        ),
        (
            "Bath Towel Set",
            [
                "600 GSM cotton",
                "quick-dry weave",
                "fade-resistant colours",
                "soft looped fibres",
                "six pieces",
            ],
            "the bathroom",
        ),
        (
            "Storage Containers",
            [
                "airtight lids",
                "BPA-free plastic",
                "stackable shapes",
                "microwave-safe bases",
                "leak-proof seals",
            ],
            "pantry organisation",
        ),
        (
            "Table Lamp",
            [
                "a dimmable LED",
                "a linen shade",
                "a USB charging port",
                "a weighted base",
                "warm light",
            ],
            "bedside reading",
        ),
    ],
    "Sports & Outdoors": [
        (
            "Yoga Mat",
            [
                "a non-slip surface",
                "6 mm cushioning",
                "eco-friendly TPE",
                "a carrying strap",
                "alignment lines",
            ],
            "yoga and stretching",
        ),
        (
            "Hiking Backpack",
            [
                "a 40-litre capacity",
                "a ventilated back panel",
                "a rain cover",
                "hip-belt pockets",
                "hydration compatibility",
            ],
            "day hikes and weekend trips",
        ),
        (
            "Running Shoes",
            [
                "a breathable mesh upper",
                "responsive foam",
                "a grippy outsole",
                "a padded heel collar",
                "reflective details",
            ],
            "road running",
        ),
        (
            "Adjustable Dumbbells",
            [
                "quick-change weight dials",
                "a 5-52 lb range",
                "a compact tray",
                "knurled handles",
                "durable steel plates",
            ],
            "home strength training",
        ),
        (
            "Camping Tent",
            [
                "a two-person design",
                "a waterproof rainfly",
                "quick setup",
                "mesh ventilation",
                "aluminium poles",
            ],
            "camping",
        ),
        (
            "Water Bottle",
            [
                "double-wall insulation",
                "a leak-proof lid",
                "24-hour cold retention",
                "BPA-free steel",
                "a wide mouth",
            ],
            "workouts and hikes",
        ),
    ],
    "Books": [
        (
            "Mystery Novel",
            [
                "a twisting plot",
                "an unforgettable detective",
                "short chapters",
                "a shocking final act",
                "a richly drawn small town",
            ],
            "curling up",
        ),
        (
            "Cookbook",
            [
                "120 recipes",
                "step-by-step photos",
                "weeknight dinners",
                "seasonal menus",
                "a pantry guide",
            ],
            "home cooks",
        ),
        (
            "Science Fiction Novel",
            [
                "a vast interstellar setting",
                "bold ideas",
                "memorable characters",
                "a fast pace",
                "a thoughtful ending",
            ],
            "fans of big ideas",
        ),
        (
            "Biography",
            [
                "unpublished letters",
                "vivid storytelling",
                "a sweeping historical canvas",
                "rare photographs",
                "careful research",
            ],
            "curious readers",
        ),
        (
            "Self-Help Guide",
            [
                "practical exercises",
                "clear habits",
                "research-backed advice",
                "real-life stories",
                "a 30-day plan",
            ],
            "personal growth",
        ),
        (
            "Children's Picture Book",
            [
                "bright illustrations",
                "rhyming text",
                "a gentle lesson",
                "sturdy pages",
                "lovable animals",
            ],
            "bedtime reading",
        ),
    ],
    "Beauty & Personal Care": [
        (
            "Face Moisturizer",
            [
                "hyaluronic acid",
                "a lightweight texture",
                "SPF 30",
                "fragrance-free formula",
                "ceramides",
            ],
            "daily hydration",
        ),
        (
            "Shampoo",
            [
                "argan oil",
                "a sulfate-free formula",
                "a fresh scent",
                "colour-safe cleansing",
                "vitamin E",
            ],
            "healthy, shiny hair",
        ),
        (
            "Electric Toothbrush",
            [
                "a two-minute timer",
                "three cleaning modes",
                "a pressure sensor",
                "a travel case",
                "a 4-week battery",
            ],
            "a brighter smile",
        ),
        (
            "Vitamin C Serum",
            [
                "15% vitamin C",
                "ferulic acid",
                "a dropper bottle",
                "a brightening effect",
                "antioxidant protection",
            ],
            "radiant skin",
        ),
        (
            "Hair Dryer",
            [
                "ionic technology",
                "three heat settings",
                "a cool-shot button",
                "a concentrator nozzle",
                "a lightweight build",
            ],
            "quick styling",
        ),
        (
            "Lip Balm Set",
            ["shea butter", "natural flavours", "SPF 15", "a four-pack", "long-lasting moisture"],
            "soft lips",
        ),
    ],
    "Toys & Games": [
        (
            "Building Blocks Set",
            [
                "500 pieces",
                "compatible bricks",
                "an illustrated guide",
                "a storage tub",
                "bright colours",
            ],
            "creative play",
        ),
        (
            "Board Game",
            [
                "2-6 players",
                "45-minute games",
                "beautiful artwork",
                "simple rules with deep strategy",
                "high-quality components",
            ],
            "family game night",
        ),
        (
            "Jigsaw Puzzle",
            [
                "1000 pieces",
                "a precision-cut fit",
                "a poster guide",
                "glare-free finish",
                "recycled board",
            ],
            "relaxing evenings",
        ),
        (
            "Remote Control Car",
            [
                "4-wheel drive",
                "a rechargeable battery",
                "a 2.4 GHz controller",
                "shock absorbers",
                "all-terrain tyres",
            ],
            "outdoor fun",
        ),
        (
            "Plush Teddy Bear",
            [
                "ultra-soft fabric",
                "embroidered eyes",
                "a huggable size",
                "machine-washable materials",
                "a ribbon bow",
            ],
            "little ones",
        ),
        (
            "Science Kit",
            [
                "20 experiments",
                "safe materials",
                "an activity booklet",
                "lab goggles",
                "STEM learning",
            ],
            "young scientists",
        ),
    ],
    "Clothing": [
        (
            "Hooded Sweatshirt",
            [
                "brushed fleece",
                "a kangaroo pocket",
                "ribbed cuffs",
                "a relaxed fit",
                "pre-shrunk cotton",
            ],
            "cool evenings",
        ),
        (
            "Denim Jeans",
            ["stretch denim", "a slim fit", "reinforced seams", "five pockets", "a classic wash"],
            "everyday wear",
        ),
        (
            "Rain Jacket",
            [
                "a waterproof shell",
                "sealed seams",
                "an adjustable hood",
                "a packable design",
                "breathable lining",
            ],
            "wet weather",
        ),
        (
            "Merino Wool Socks",
            ["merino wool", "cushioned soles", "odour resistance", "arch support", "a three-pack"],
            "hiking and daily wear",
        ),
        (
            "Cotton T-Shirt",
            [
                "organic cotton",
                "a crew neck",
                "a tagless collar",
                "a soft hand feel",
                "a tailored fit",
            ],
            "layering",
        ),
        (
            "Down Vest",
            [
                "650-fill down",
                "a water-repellent finish",
                "zip pockets",
                "a packable design",
                "a stand-up collar",
            ],
            "chilly mornings",
        ),
    ],
    "Pet Supplies": [
        (
            "Dog Bed",
            [
                "orthopedic foam",
                "a removable washable cover",
                "a non-slip base",
                "raised bolsters",
                "chew-resistant fabric",
            ],
            "restful sleep",
        ),
        (
            "Cat Scratching Post",
            [
                "natural sisal rope",
                "a sturdy base",
                "a dangling toy",
                "a carpeted perch",
                "easy assembly",
            ],
            "healthy claws",
        ),
        (
            "Dog Leash",
            [
                "reflective stitching",
                "a padded handle",
                "a strong clasp",
                "a 6-foot length",
                "weatherproof nylon",
            ],
            "daily walks",
        ),
        (
            "Grain-Free Dog Food",
            [
                "real chicken",
                "no artificial preservatives",
                "omega fatty acids",
                "probiotics",
                "a resealable bag",
            ],
            "balanced nutrition",
        ),
        (
            "Cat Litter",
            ["clumping clay", "odour control", "low dust", "an unscented formula", "a 20-lb bag"],
            "a fresh home",
        ),
        (
            "Pet Water Fountain",
            [
                "a triple filter",
                "a quiet pump",
                "a 2-litre capacity",
                "BPA-free plastic",
                "an LED water indicator",
            ],
            "fresh water",
        ),
    ],
}

# median price ($) of each product type; the category's sigma spreads prices around it
_TYPE_PRICE: dict[str, float] = {
    "Wireless Earbuds": 79,
    "Bluetooth Speaker": 59,
    "Smartwatch": 199,
    "Mechanical Keyboard": 89,
    "4K Monitor": 329,
    "Power Bank": 35,
    "Webcam": 59,
    "Chef's Knife": 49,
    "Nonstick Frying Pan": 35,
    "Coffee Grinder": 45,
    "Air Fryer": 99,
    "Bath Towel Set": 39,
    "Storage Containers": 25,
    "Table Lamp": 39,
    "Yoga Mat": 29,
    "Hiking Backpack": 89,
    "Running Shoes": 99,
    "Adjustable Dumbbells": 199,
    "Camping Tent": 149,
    "Water Bottle": 25,
    "Mystery Novel": 15,
    "Cookbook": 25,
    "Science Fiction Novel": 16,
    "Biography": 20,
    "Self-Help Guide": 17,
    "Children's Picture Book": 11,
    "Face Moisturizer": 22,
    "Shampoo": 12,
    "Electric Toothbrush": 49,
    "Vitamin C Serum": 25,
    "Hair Dryer": 59,
    "Lip Balm Set": 9,
    "Building Blocks Set": 39,
    "Board Game": 35,
    "Jigsaw Puzzle": 18,
    "Remote Control Car": 45,
    "Plush Teddy Bear": 19,
    "Science Kit": 29,
    "Hooded Sweatshirt": 45,
    "Denim Jeans": 59,
    "Rain Jacket": 89,
    "Merino Wool Socks": 19,
    "Cotton T-Shirt": 19,
    "Down Vest": 119,
    "Dog Bed": 49,
    "Cat Scratching Post": 39,
    "Dog Leash": 17,
    "Grain-Free Dog Food": 45,
    "Cat Litter": 19,
    "Pet Water Fountain": 29,
}
_SERIES = [
    "Pro",
    "Lite",
    "Max",
    "Air",
    "Plus",
    "Essential",
    "Classic",
    "Sport",
    "One",
    "Go",
    "Elite",
    "Core",
    "Flex",
    "Prime",
    "Nova",
    "Studio",
]
_EDITIONS = ["", "", "", " II", " 2", " X", " S", " (2024)", " (2025)", " Mini"]
_BOOK_WORDS = [
    "Orchard",
    "Lighthouse",
    "Winter",
    "Garden",
    "River",
    "Stranger",
    "Harbor",
    "Echo",
    "Promise",
    "Ember",
    "Compass",
    "Silence",
    "Meadow",
    "Cartographer",
    "Lantern",
    "Tide",
    "Horizon",
    "Secret",
    "Island",
    "Star",
    "Kitchen",
    "Table",
    "Road",
    "Fox",
]
_BOOK_ADJECTIVES = [
    "Silent",
    "Last",
    "Hidden",
    "Golden",
    "Lost",
    "Quiet",
    "Wild",
    "Long",
    "Bright",
    "Forgotten",
    "Little",
    "Second",
]
_QUALITY_WORDS = {
    -1: ["practical", "no-frills", "budget-friendly", "simple"],
    0: ["reliable", "well-made", "versatile", "popular"],
    1: ["premium", "expertly crafted", "high-end", "luxurious"],
}
_TIER_SENTENCES = {
    -1: "A great-value pick that covers the essentials without the extra cost.",
    0: "A dependable choice that balances quality and price.",
    1: "Premium materials and a refined finish for those who want the best.",
}
_FIRST_NAMES = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Lucas",
    "Sophia",
    "Mateo",
    "Mia",
    "Ethan",
    "Amara",
    "Hiro",
    "Priya",
    "Omar",
    "Chloe",
    "Leo",
    "Zara",
    "Ivan",
    "Nora",
    "Kofi",
    "Elena",
    "Samir",
    "Grace",
    "Diego",
    "Yuki",
    "Aisha",
    "Jonas",
    "Lena",
    "Ravi",
    "Isla",
]
_LAST_NAMES = [
    "Smith",
    "Garcia",
    "Nguyen",
    "Muller",
    "Rossi",
    "Kim",
    "Okafor",
    "Silva",
    "Cohen",
    "Patel",
    "Dubois",
    "Novak",
    "Larsen",
    "Tanaka",
    "Haddad",
    "Walsh",
    "Moreau",
    "Costa",
    "Ivanova",
    "Baker",
    "Singh",
    "Lopez",
    "Jensen",
    "Adeyemi",
    "Fischer",
    "Brown",
]


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes and seed of one generated store (``scale`` multiplies the three sizes)."""

    n_users: int = DEFAULT_USERS
    n_items: int = DEFAULT_ITEMS
    n_interactions: int = DEFAULT_INTERACTIONS
    seed: int = DEFAULT_SEED
    days: int = 90
    explore_rate: float = 0.08  # share of visits drawn from global popularity, not tastes

    @classmethod
    def scaled(
        cls,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        n_interactions: int | None = None,
        seed: int = DEFAULT_SEED,
        scale: float = 1.0,
    ) -> GeneratorConfig:
        """Explicit sizes win; sizes left out are the defaults times ``scale``."""
        if scale <= 0:
            raise InvalidInput("scale must be positive")

        def size(explicit: int | None, default: int) -> int:
            return int(explicit) if explicit is not None else max(1, round(default * scale))

        config = cls(
            n_users=size(n_users, DEFAULT_USERS),
            n_items=size(n_items, DEFAULT_ITEMS),
            n_interactions=size(n_interactions, DEFAULT_INTERACTIONS),
            seed=seed,
        )
        if min(config.n_users, config.n_items, config.n_interactions) < 1:
            raise InvalidInput("n_users, n_items and n_interactions must be at least 1")
        return config


@dataclass
class Tastes:
    """The latent tastes behind the interactions (for tests and analysis; never written)."""

    category_names: list[str]
    category_pref: np.ndarray  # (n_users, n_categories) float64, rows sum to 1
    price_level: np.ndarray  # (n_users,) float64, about -1 budget .. +1 premium
    type_pref: np.ndarray  # (n_users, n_categories, max_types) float64, product-type interests
    favourite_brand: np.ndarray  # (n_users, n_categories) int64, index into the category's brands
    loyalty: np.ndarray  # (n_users,) float64 in (0, 1)
    item_category: np.ndarray  # (n_items,) int64
    item_type: np.ndarray  # (n_items,) int64, index into the category's product types
    item_brand: np.ndarray  # (n_items,) int64, index into the category's brands


@dataclass
class SyntheticStore:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    tastes: Tastes
    stats: dict[str, Any] = field(default_factory=dict)


def generate_dataset(
    folder: str | Path,
    *,
    n_users: int | None = None,
    n_items: int | None = None,
    n_interactions: int | None = None,
    seed: int = DEFAULT_SEED,
    scale: float = 1.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate the store and write it in the canonical format; returns counts and timings."""
    config = GeneratorConfig.scaled(
        n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed, scale=scale
    )
    started = time.perf_counter()
    store = synthesize(config, progress=progress)
    generated = time.perf_counter()
    summary = write_dataset(folder, store.users, store.items, store.interactions, progress=progress)
    summary.update(store.stats)
    summary["seed"] = config.seed
    summary["generate_s"] = round(generated - started, 2)
    summary["write_s"] = round(time.perf_counter() - generated, 2)
    return summary


def synthesize(config: GeneratorConfig, *, progress: bool = False) -> SyntheticStore:
    """Build the users, items and interactions frames of one store (no I/O)."""
    rng = np.random.default_rng(config.seed)
    catalogue = _Catalogue.build()
    items, item_latent = _make_items(rng, catalogue, config.n_items)
    tastes = _make_tastes(rng, catalogue, item_latent, config.n_users)
    interactions = _make_interactions(rng, catalogue, item_latent, tastes, config, progress)
    _fill_ratings(rng, items, interactions, item_latent["quality"], item_latent["popularity"])
    users = pd.DataFrame(
        {
            "user_id": _ids("u", config.n_users),
            "name": _names(rng, config.n_users),
        }
    )
    interactions["user_id"] = pd.Categorical.from_codes(
        interactions.pop("user_index"), categories=users["user_id"]
    )
    interactions["item_id"] = pd.Categorical.from_codes(
        interactions.pop("item_index"), categories=items["item_id"]
    )
    interactions = interactions[["user_id", "item_id", "event", "rating", "weight", "timestamp"]]
    event_counts = interactions["event"].value_counts()
    stats = {"events": {e: int(event_counts.get(e, 0)) for e in EVENTS_IN_FUNNEL}}
    return SyntheticStore(users, items, interactions, tastes, stats)


@dataclass(frozen=True)
class _Catalogue:
    """The fixed store vocabulary as arrays: brands padded to ``max_brands`` per category."""

    names: list[str]
    shares: np.ndarray  # (n_categories,)
    type_price: np.ndarray  # (n_categories, max_types) median price of each product type
    price_sigma: np.ndarray  # (n_categories,)
    brand_names: list[list[str]]
    brand_tier: np.ndarray  # (n_categories, max_brands) float64, 0 for padding
    brand_exists: np.ndarray  # (n_categories, max_brands) bool

    @classmethod
    def build(cls) -> _Catalogue:
        names = [c[0] for c in _CATEGORIES]
        shares = np.array([c[1] for c in _CATEGORIES])
        max_brands = max(len(_BRANDS[n]) for n in names)
        tier = np.zeros((len(names), max_brands))
        exists = np.zeros((len(names), max_brands), dtype=bool)
        for c, name in enumerate(names):
            for b, (_, brand_tier) in enumerate(_BRANDS[name]):
                tier[c, b], exists[c, b] = brand_tier, True
        return cls(
            names=names,
            shares=shares / shares.sum(),
            type_price=_type_prices(names),
            price_sigma=np.array([c[2] for c in _CATEGORIES]),
            brand_names=[[b for b, _ in _BRANDS[n]] for n in names],
            brand_tier=tier,
            brand_exists=exists,
        )

    @property
    def max_brands(self) -> int:
        return self.brand_tier.shape[1]

    @property
    def max_types(self) -> int:
        return self.type_price.shape[1]


def _type_prices(category_names: list[str]) -> np.ndarray:
    max_types = max(len(_TYPES[name]) for name in category_names)
    prices = np.ones((len(category_names), max_types))
    for c, name in enumerate(category_names):
        for t, (noun, _, _) in enumerate(_TYPES[name]):
            prices[c, t] = _TYPE_PRICE[noun]
    return prices


def _make_items(
    rng: np.random.Generator, catalogue: _Catalogue, n_items: int
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    n_categories = len(catalogue.names)
    category = rng.choice(n_categories, size=n_items, p=catalogue.shares)
    # brands: a Zipf-like share inside each category, so a few brands dominate
    brand_share = np.where(
        catalogue.brand_exists, 1.0 / np.arange(1, catalogue.max_brands + 1) ** 0.7, 0.0
    )
    brand_share /= brand_share.sum(axis=1, keepdims=True)
    brand = _choice_rows(rng, np.cumsum(brand_share, axis=1), category)
    n_types = np.array([len(_TYPES[name]) for name in catalogue.names])
    type_index = (rng.random(n_items) * n_types[category]).astype(np.int64)
    tier = catalogue.brand_tier[category, brand]
    quality = rng.normal(0.0, 1.0, n_items) + 0.25 * tier
    log_price = (
        np.log(catalogue.type_price[category, type_index])
        + 0.4 * tier
        + catalogue.price_sigma[category] * rng.normal(0.0, 1.0, n_items)
    )
    price = _retail_price(np.exp(log_price))
    # long-tailed popularity that rises with quality and with the brand's share
    log_popularity = (
        1.0 * rng.normal(0.0, 1.0, n_items)
        + 0.35 * quality
        + 0.5 * np.log(brand_share[category, brand] * catalogue.max_brands)
    )
    popularity = np.exp(log_popularity)

    text_rng = np.random.default_rng(rng.integers(2**63))
    titles, descriptions = [], []
    for i in range(n_items):
        title, description = _product_text(
            text_rng, catalogue, int(category[i]), int(brand[i]), int(type_index[i])
        )
        titles.append(title)
        descriptions.append(description)
    items = pd.DataFrame(
        {
            "item_id": _ids("p", n_items),
            "title": titles,
            "brand": [catalogue.brand_names[c][b] for c, b in zip(category, brand, strict=True)],
            "category": [catalogue.names[c] for c in category],
            "price": price,
            "avg_rating": np.nan,
            "rating_count": 0,
            "description": descriptions,
            "image_url": "",
        }
    )
    latent = {
        "category": category,
        "type": type_index,
        "brand": brand,
        "quality": quality,
        "popularity": popularity,
    }
    return items, latent


def _retail_price(raw: np.ndarray) -> np.ndarray:
    """Shop-style prices: $x.99 above $10, $x.49/$x.99 below, never under $1.99."""
    raw = np.maximum(raw, 2.0)
    whole = np.floor(raw) + 0.99
    halves = np.floor(raw * 2.0) / 2.0 - 0.01
    return np.round(np.where(raw >= 10.0, whole, np.maximum(halves, 1.99)), 2)


def _product_text(
    rng: np.random.Generator, catalogue: _Catalogue, category: int, brand: int, type_index: int
) -> tuple[str, str]:
    category_name = catalogue.names[category]
    brand_name = catalogue.brand_names[category][brand]
    tier = int(catalogue.brand_tier[category, brand])
    noun, features, use = _TYPES[category_name][type_index]
    chosen = [features[i] for i in sorted(rng.choice(len(features), size=3, replace=False))]
    quality = _QUALITY_WORDS[tier][rng.integers(4)]
    if category_name == "Books":
        words = rng.choice(len(_BOOK_WORDS), size=2, replace=False)
        adjective = _BOOK_ADJECTIVES[rng.integers(len(_BOOK_ADJECTIVES))]
        book = f"The {adjective} {_BOOK_WORDS[words[0]]}"
        if rng.random() < 0.4:
            book += f" of the {_BOOK_WORDS[words[1]]}"
        title = f"{book} ({noun})"
        description = (
            f"{book} is a {quality} {_lower(noun)} published by {brand_name}, perfect for "
            f"{use}. Readers love its {chosen[0]}, {chosen[1]} and {chosen[2]}. "
            f"{_TIER_SENTENCES[tier]}"
        )
        return title, description
    series = _SERIES[rng.integers(len(_SERIES))]
    edition = _EDITIONS[rng.integers(len(_EDITIONS))]
    title = f"{brand_name} {series} {noun}{edition}"
    plural = noun.endswith("s")  # "Earbuds", "Socks": no article, plural verb
    article = "" if plural else ("an " if quality[0] in "aeiou" else "a ")
    verb, they = ("are", "They feature") if plural else ("is", "It features")
    description = (
        f"The {brand_name} {series}{edition} {verb} {article}{quality} {_lower(noun)} made for "
        f"{use}. {they} {chosen[0]}, {chosen[1]} and {chosen[2]}. {_TIER_SENTENCES[tier]}"
    )
    return title, description


def _lower(noun: str) -> str:
    """Lower-case a product type inside a sentence, keeping names and acronyms ("Bluetooth",
    "4K")."""
    keep = {"Bluetooth"}
    words = [
        w if w in keep or w.isupper() or any(ch.isdigit() for ch in w) else w.lower()
        for w in noun.split()
    ]
    return " ".join(words)


def _make_tastes(
    rng: np.random.Generator,
    catalogue: _Catalogue,
    item_latent: dict[str, np.ndarray],
    n_users: int,
) -> Tastes:
    n_categories = len(catalogue.names)
    focused = rng.dirichlet(np.full(n_categories, 0.2), size=n_users)
    stocked = np.bincount(item_latent["category"], minlength=n_categories) > 0
    category_pref = (0.85 * focused + 0.15 * catalogue.shares[None, :]) * stocked[None, :]
    category_pref /= category_pref.sum(axis=1, keepdims=True)
    # inside each category a user cares about a few product types (runner: shoes, bottles)
    type_stocked = np.zeros((n_categories, catalogue.max_types), dtype=bool)
    type_stocked[item_latent["category"], item_latent["type"]] = True
    type_pref = rng.gamma(0.3, 1.0, (n_users, n_categories, catalogue.max_types))
    type_pref = (type_pref + 1e-9) * type_stocked[None, :, :]
    type_pref /= np.maximum(type_pref.sum(axis=2, keepdims=True), 1e-300)
    price_level = np.clip(rng.normal(0.0, 0.7, n_users), -1.5, 1.5)
    # favourite brand per category: among brands with items, closer tiers are likelier
    has_items = np.zeros_like(catalogue.brand_exists)
    has_items[item_latent["category"], item_latent["brand"]] = True
    tier_gap = catalogue.brand_tier[None, :, :] - price_level[:, None, None]
    affinity = np.exp(-(tier_gap**2) / (2 * 0.6**2)) * has_items[None, :, :]
    cumulative = np.cumsum(affinity, axis=2)
    totals = np.maximum(cumulative[:, :, -1:], 1e-12)
    draws = rng.random((n_users, n_categories, 1)) * totals
    favourite_brand = np.minimum((cumulative < draws).sum(axis=2), catalogue.max_brands - 1).astype(
        np.int64
    )
    return Tastes(
        category_names=list(catalogue.names),
        category_pref=category_pref,
        price_level=price_level,
        type_pref=type_pref,
        favourite_brand=favourite_brand,
        loyalty=rng.beta(2.0, 3.0, n_users),
        item_category=item_latent["category"].astype(np.int64),
        item_type=item_latent["type"].astype(np.int64),
        item_brand=item_latent["brand"].astype(np.int64),
    )


def _make_interactions(
    rng: np.random.Generator,
    catalogue: _Catalogue,
    item_latent: dict[str, np.ndarray],
    tastes: Tastes,
    config: GeneratorConfig,
    progress: bool,
) -> pd.DataFrame:
    """Visits sampled from tastes, expanded through the funnel, cut to exactly n_interactions."""
    n_users = len(tastes.price_level)
    sampler = _ItemSampler.build(catalogue, item_latent, tastes)
    activity = rng.lognormal(0.0, 1.0, n_users)
    activity_cdf = np.cumsum(activity) / activity.sum()
    per_visit = _expected_events_per_visit(config.explore_rate)

    bar = None
    if progress and config.n_interactions > _CHUNK_VISITS:
        from tqdm import tqdm

        bar = tqdm(total=config.n_interactions, desc="generating interactions", unit="event")
    parts, produced, first = [], 0, True
    while produced < config.n_interactions:
        remaining = config.n_interactions - produced
        n_visits = min(_CHUNK_VISITS, math.ceil(remaining / per_visit) + 64)
        users = np.minimum(np.searchsorted(activity_cdf, rng.random(n_visits)), n_users - 1)
        if first:  # everybody shows up at least once
            head = min(n_users, n_visits)
            users[:head] = rng.permutation(n_users)[:head]
            first = False
        explore = rng.random(n_visits) < config.explore_rate
        items = sampler.sample(rng, tastes, users, explore)
        events = _funnel(rng, users, items, explore, config)
        events = events.iloc[: config.n_interactions - produced]
        parts.append(events)
        produced += len(events)
        if bar is not None:
            bar.update(len(events))
    if bar is not None:
        bar.close()
    frame = pd.concat(parts, ignore_index=True)
    order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


@dataclass(frozen=True)
class _ItemSampler:
    """Samples items from tastes: category, then product type, then brand, then an item of that
    (category, type, brand) group proportional to popularity.

    Items are sorted by group ``g``; ``keys[j] = g + F_g(j)`` where ``F_g`` is the within-group
    popularity CDF, so ``searchsorted(keys, g + r)`` with ``r`` in (0, 1] draws an item of
    group ``g`` for every visit in one vectorised call.
    """

    order: np.ndarray  # (n_items,) item indices sorted by group
    keys: np.ndarray  # (n_items,) float64, see above
    global_cdf: np.ndarray  # (n_items,) popularity CDF over ``order``
    brand_weight: np.ndarray  # (n_categories, max_types, max_brands) popularity share, 0 = empty
    brand_tier: np.ndarray  # (n_categories, max_brands)
    category_cdf: np.ndarray  # (n_users, n_categories)
    type_cdf: np.ndarray  # (n_users * n_categories, max_types)
    shape: tuple[int, int, int]  # (n_categories, max_types, max_brands)

    @classmethod
    def build(
        cls, catalogue: _Catalogue, item_latent: dict[str, np.ndarray], tastes: Tastes
    ) -> _ItemSampler:
        shape = (len(catalogue.names), catalogue.max_types, catalogue.max_brands)
        group = np.ravel_multi_index(
            (item_latent["category"], item_latent["type"], item_latent["brand"]), shape
        )
        order = np.argsort(group, kind="stable")
        sorted_group = group[order]
        popularity = item_latent["popularity"][order]
        group_total = np.bincount(sorted_group, weights=popularity, minlength=int(np.prod(shape)))
        cumulative = np.cumsum(popularity)
        first_of_group = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
        last_of_group = np.r_[sorted_group[1:] != sorted_group[:-1], True]
        base = np.maximum.accumulate(np.where(first_of_group, cumulative - popularity, 0.0))
        within = (cumulative - base) / group_total[sorted_group]
        within = np.where(last_of_group, 1.0, np.minimum(within, 1.0))  # no rounding gaps
        brand_weight = group_total.reshape(shape)
        type_total = brand_weight.sum(axis=2, keepdims=True)
        n_users = len(tastes.price_level)
        return cls(
            order=order,
            keys=sorted_group + within,
            global_cdf=cumulative / cumulative[-1],
            brand_weight=np.divide(
                brand_weight, type_total, out=np.zeros_like(brand_weight), where=type_total > 0
            ),
            brand_tier=catalogue.brand_tier,
            category_cdf=np.cumsum(tastes.category_pref, axis=1),
            type_cdf=np.cumsum(tastes.type_pref, axis=2).reshape(n_users * shape[0], shape[1]),
            shape=shape,
        )

    def sample(
        self, rng: np.random.Generator, tastes: Tastes, users: np.ndarray, explore: np.ndarray
    ) -> np.ndarray:
        """(n,) item indices for visits of ``users`` (n,); ``explore`` (n,) bool ignores tastes."""
        n = len(users)
        n_categories = self.shape[0]
        category = _choice_rows(rng, self.category_cdf, users)
        product_type = _choice_rows(rng, self.type_cdf, users * n_categories + category)
        # brand: popularity inside (category, type) times closeness to the user's price level
        tier_gap = self.brand_tier[category] - tastes.price_level[users, None]
        weight = self.brand_weight[category, product_type] * np.exp(-(tier_gap**2) / 0.5)
        brand = _choice_rows(rng, np.cumsum(weight, axis=1), np.arange(n))
        favourite = tastes.favourite_brand[users, category]
        stocked = self.brand_weight[category, product_type, favourite] > 0
        loyal = stocked & (rng.random(n) < tastes.loyalty[users])
        brand = np.where(loyal, favourite, brand)
        group = np.ravel_multi_index((category, product_type, brand), self.shape)
        r = 1.0 - rng.random(n)  # (0, 1]
        position = np.searchsorted(self.keys, group + r, side="left")
        tasteful = self.order[np.minimum(position, len(self.keys) - 1)]
        popular = self.order[
            np.minimum(np.searchsorted(self.global_cdf, rng.random(n)), len(self.order) - 1)
        ]
        return np.where(explore, popular, tasteful)


def _funnel(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    explore: np.ndarray,
    config: GeneratorConfig,
) -> pd.DataFrame:
    """Expand visits into view -> click -> add_to_cart -> purchase events with timestamps."""
    n = len(users)
    clicked = rng.random(n) < np.where(explore, _EXPLORE_CLICK_RATE, _CLICK_RATE)
    carted = clicked & (rng.random(n) < _CART_RATE)
    bought = carted & (rng.random(n) < _BUY_RATE)
    visit_time = _visit_times(rng, n, config.days)
    # delays after the view: click 5 s - 2 min, cart + 30 s - 10 min, purchase + 1 - 30 min
    click_time = visit_time + rng.integers(5, 120, n)
    cart_time = click_time + rng.integers(30, 600, n)
    buy_time = cart_time + rng.integers(60, 1800, n)
    stages = [
        (np.ones(n, dtype=bool), visit_time),
        (clicked, click_time),
        (carted, cart_time),
        (bought, buy_time),
    ]
    # events stay grouped by visit (view, then its funnel) so a prefix cut keeps whole funnels
    stage_of = np.stack([mask for mask, _ in stages], axis=1)  # (n, 4)
    visit_index, stage = np.nonzero(stage_of)
    stamps = np.stack([t for _, t in stages], axis=1)[visit_index, stage]
    weights = np.array([EVENT_WEIGHTS[e] for e in EVENTS_IN_FUNNEL])
    return pd.DataFrame(
        {
            "user_index": users[visit_index].astype(np.int32),
            "item_index": items[visit_index].astype(np.int32),
            "event": pd.Categorical.from_codes(stage, categories=list(EVENTS_IN_FUNNEL)),
            "rating": np.nan,
            "weight": weights[stage],
            "timestamp": _window_start(config.days) + stamps,
        }
    )


def _window_start(days: int) -> np.datetime64:
    return END_DATE - np.timedelta64(days * 86400, "s")


def _visit_times(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """(n,) int64 seconds since the window start: traffic growing over the window, busier
    weekends, a lunchtime and a larger evening peak."""
    growth = 0.5  # the last day has 1.5x the traffic of the first
    position = (np.sqrt(1.0 + growth * (2.0 + growth) * rng.random(n)) - 1.0) / growth
    day = np.minimum((position * days).astype(np.int64), days - 1)
    start_day = _window_start(days).astype("datetime64[D]").astype(np.int64)
    weekday = (start_day + day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    to_saturday = (5 - weekday) % 7
    moved = (weekday < 5) & (rng.random(n) < 0.12) & (day + to_saturday < days)
    day = np.where(moved, day + to_saturday + rng.integers(0, 2, n), day)
    day = np.minimum(day, days - 1)
    hour = np.where(rng.random(n) < 0.65, rng.normal(20.0, 2.2, n), rng.normal(12.5, 3.0, n))
    seconds = np.clip(hour, 0.0, 23.99) * 3600.0 + rng.random(n) * 36.0
    return day * 86400 + seconds.astype(np.int64)


def _fill_ratings(
    rng: np.random.Generator,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    quality: np.ndarray,
    popularity: np.ndarray,
) -> None:
    """rating_count from purchases (about 40% of buyers review, plus older reviews);
    avg_rating from latent quality, noisier when few ratings; unknown when none."""
    purchases = interactions["item_index"].to_numpy()[
        (interactions["event"] == "purchase").to_numpy()
    ]
    bought = np.bincount(purchases, minlength=len(items))
    older = rng.poisson(4.0 * popularity / popularity.mean())  # reviews from before the window
    count = rng.binomial(bought, 0.4) + older
    mean = 4.1 + 0.35 * quality + rng.normal(0.0, 0.6, len(items)) / np.sqrt(np.maximum(count, 1))
    items["rating_count"] = count.astype(np.int64)
    items["avg_rating"] = np.where(count > 0, np.round(np.clip(mean, 1.0, 5.0), 1), np.nan)


def _choice_rows(rng: np.random.Generator, cumulative: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per entry of ``rows`` from the categorical rows of ``cumulative`` (m, k),
    unnormalised CDFs. Returns (len(rows),) int64 column indices."""
    totals = cumulative[rows, -1]
    draws = rng.random(len(rows)) * totals
    picked = (cumulative[rows] <= draws[:, None]).sum(axis=1)
    return np.minimum(picked, cumulative.shape[1] - 1).astype(np.int64)


def _ids(prefix: str, n: int) -> list[str]:
    width = max(5, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def _names(rng: np.random.Generator, n: int) -> list[str]:
    first = rng.integers(len(_FIRST_NAMES), size=n)
    last = rng.integers(len(_LAST_NAMES), size=n)
    return [f"{_FIRST_NAMES[f]} {_LAST_NAMES[s]}" for f, s in zip(first, last, strict=True)]


def _expected_events_per_visit(explore_rate: float) -> float:
    """Mean events per visit of the funnel in :func:`_funnel` (used to size chunks)."""
    click = (1.0 - explore_rate) * _CLICK_RATE + explore_rate * _EXPLORE_CLICK_RATE
    return 1.0 + click * (1.0 + _CART_RATE * (1.0 + _BUY_RATE))


__all__ = ["GeneratorConfig", "SyntheticStore", "Tastes", "generate_dataset", "synthesize"]
