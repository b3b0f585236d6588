"""Alt-text-like captions for the miniature world's web images (generator version 3).

Real web image-text pairs (what OpenAI's CLIP learnt its concepts from) are not scene descriptions: they
are product titles ("red apple isolated on white"), stock-photo titles ("an apple and a banana on a wooden
table, stock photo"), social posts ("my dog next to the cat"), keyword lists ("apple, banana") and bare
names. :func:`alt_text` writes one such caption for a web image with one or several objects, mentioning
every object (with synonyms, plurals, counts and colours, sometimes the scene phrase). The registers are
deliberately unlike the scene captions' grammar (``regionclip.world.make_caption``: no "a photo of",
no spatial relations), so the pretraining captions stay a different distribution, as CC3M is for CLIP.

Objects are passed as :class:`Mention` tuples; the category only needs ``name``, ``plural``, ``synonyms``
and ``synonym_plurals`` (a ``regionclip.world.Category``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

# register -> templates. Slots: {x} all objects as bare noun phrases ("red apple", "two dogs") joined with
# "and"; {ax} the same with articles ("a red apple and two dogs"); {first}/{rest} the first object and the
# others (templates of two or more objects); {tags} hashtags of the one-word names; {list} names joined by
# the register's separator; {scene} a phrase describing the background.
REGISTERS: dict[str, tuple[str, ...]] = {
    "product": (
        "{x} isolated on white",
        "{x}, isolated on a white background",
        "{x} - product photo",
        "buy {x} online",
        "{x} for sale",
        "new {x}, front view",
        "{x} set, high quality",
        "cheap {x} with free shipping",
    ),
    "stock": (
        "{ax} {scene}, stock photo",
        "stock image of {ax}",
        "{ax} {scene}. royalty free image",
        "{ax} on a plain background, stock picture",
        "high angle view of {ax} {scene}",
        "{ax}, stock illustration",
    ),
    "social": (
        "my {first} next to the {rest}",
        "look at this {x}!",
        "our new {x} :)",
        "got {ax} today",
        "{ax} and me lol",
        "{x} {tags}",
        "so cute!! {ax}",
        "finally! {x}",
    ),
    "list": ("{list}", "tags: {list}", "keywords: {list}", "{list}, {scene}"),
    "bare": ("{x}", "{x}.", "{X}"),
}
REGISTER_WEIGHTS = {"product": 0.25, "stock": 0.2, "social": 0.2, "list": 0.15, "bare": 0.2}
LIST_SEPARATORS = (", ", " | ", "; ", " / ")
_COUNTS = {2: ("two", "2", "a pair of"), 3: ("three", "3", "a set of three")}


class Mention(NamedTuple):
    """One category shown in a web image: how many copies and its colour adjective (None: no colour)."""

    category: Any  # regionclip.world.Category (name, plural, synonyms, synonym_plurals)
    count: int  # >= 1
    colour: str | None


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" and not phrase.startswith(("uni", "eu")) else "a"


def _noun(mention: Mention, rng: np.random.Generator, article: bool, colour_p: float) -> str:
    """ "red apple" / "a red apple" / "two dogs" / "2 puppies" / "a pair of skis"."""
    cat, count = mention.category, mention.count
    use_syn = bool(cat.synonyms) and rng.random() < 0.35
    k = int(rng.integers(len(cat.synonyms))) if use_syn else -1
    singular = cat.synonyms[k] if use_syn else cat.name
    plural = cat.synonym_plurals[k] if use_syn else cat.plural
    colour = f"{mention.colour} " if mention.colour is not None and rng.random() < colour_p else ""
    if count == 1:
        words = colour + singular
        if singular == plural and singular.endswith("s"):  # "skis", "scissors": a pair of
            return f"a pair of {words}" if article else words
        return f"{_article(words)} {words}" if article else words
    if rng.random() < 0.25:
        return colour + plural  # a bare plural: "dogs"
    return f"{_COUNTS[count][int(rng.integers(3))]} {colour}{plural}"


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    last = " with " if len(parts) == 2 and rng.random() < 0.3 else " and "
    return ", ".join(parts[:-1]) + last + parts[-1]


def alt_text(
    mentions: list[Mention], scene_phrases: tuple[str, ...], rng: np.random.Generator
) -> tuple[str, str]:
    """One alt-text caption naming every object of ``mentions``; returns (caption, "register:template")."""
    registers = list(REGISTER_WEIGHTS)
    weights = np.array([REGISTER_WEIGHTS[r] for r in registers])
    register = registers[int(rng.choice(len(registers), p=weights / weights.sum()))]
    templates = [t for t in REGISTERS[register] if len(mentions) > 1 or "{rest}" not in t]
    if not any(" " not in m.category.name for m in mentions):
        templates = [t for t in templates if "{tags}" not in t] or templates
    t_index = int(rng.integers(len(templates)))
    template = templates[t_index]
    colour_p = 0.5 if register in ("product", "stock") else 0.3
    order = [mentions[int(i)] for i in rng.permutation(len(mentions))]
    bare = [_noun(m, rng, False, colour_p) for m in order]
    with_article = [_noun(m, rng, True, colour_p) for m in order]
    scene = str(scene_phrases[int(rng.integers(len(scene_phrases)))]) if scene_phrases else "on a table"
    one_word = [m.category.name for m in order if " " not in m.category.name]
    tags = " ".join(f"#{n}" for n in one_word)
    if "{tags}" in template and len(one_word) < len(order):  # a tag for every object is not possible
        tags = ""
    text = template.format(
        x=_join(bare, rng),
        X=_join(bare, rng).upper() if rng.random() < 0.3 else _join(bare, rng).title(),
        ax=_join(with_article, rng),
        first=bare[0],
        rest=_join(bare[1:], rng),
        tags=tags,
        list=str(rng.choice(LIST_SEPARATORS)).join(bare),
        scene=scene,
    ).strip()
    if register not in ("list", "stock") and "{scene}" not in template and rng.random() < 0.15:
        text = f"{text} {scene}"  # now and then the scene phrase
    if register in ("product", "stock") and rng.random() < 0.4:
        text = text[0].upper() + text[1:]
    return text, f"{register}:{REGISTERS[register].index(template)}"
