"""Tests of the web split's alt-text captions (regionclip.world.alt_text, world generator version 3)."""

from __future__ import annotations

import numpy as np

from regionclip.world import alt_text
from regionclip.world import generator as world


def _random_mentions(rng: np.random.Generator) -> list[alt_text.Mention]:
    cats = world.categories(3)
    n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    picked = [cats[int(i)] for i in rng.choice(len(cats), size=n, replace=False)]
    return [alt_text.Mention(c, int(rng.integers(1, 3)), str(rng.choice(["red", "blue"]))) for c in picked]


def test_captions_vary_in_register_and_name_every_object():
    rng = np.random.default_rng(0)
    templates, texts = set(), []
    scene = ("on a wooden table", "in a park")
    for _ in range(600):
        mentions = _random_mentions(rng)
        text, template = alt_text.alt_text(mentions, scene, rng)
        templates.add(template)
        texts.append(text.lower())
        for m in mentions:  # every object is named: by its name, a synonym or a plural
            assert any(p in text.lower() for p in m.category.phrases()), (text, m.category.name)
    assert {t.split(":")[0] for t in templates} == set(alt_text.REGISTERS)
    assert len(templates) >= 25  # of 29 templates
    joined = "\n".join(texts)
    for marker in ("isolated on white", "stock photo", "my ", "tags: ", " | ", "#", "two ", "a pair of "):
        assert marker in joined, marker  # product, stock, social, lists, hashtags, counts
    assert any(t.startswith(("red ", "blue ")) for t in texts)  # colours
    assert sum("wooden table" in t or "park" in t for t in texts) > 30  # the scene phrase, now and then
    assert sum("wooden table" in t or "park" in t for t in texts) < 300
    assert len(set(texts)) > 550  # little repetition


def test_synonyms_and_plurals_appear():
    rng = np.random.default_rng(1)
    dog = next(c for c in world.categories(3) if c.name == "dog")
    texts = [alt_text.alt_text([alt_text.Mention(dog, 2, None)], (), rng)[0].lower() for _ in range(200)]
    assert any("puppies" in t for t in texts) and any("dogs" in t for t in texts)
    assert all("dogs" in t or "puppies" in t for t in texts)  # two of them: always a plural
    skis = next(c for c in world.categories(3) if c.name == "skis")
    one = [alt_text.alt_text([alt_text.Mention(skis, 1, None)], (), rng)[0].lower() for _ in range(100)]
    assert not any(" a skis" in f" {t}" for t in one)  # "a pair of skis", never "a skis"
