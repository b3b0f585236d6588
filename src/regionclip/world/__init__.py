"""The miniature world: a generator of small open-vocabulary detection datasets in real formats (COCO
instances and captions JSON, image folders, webdataset shards), the demo's embedded default data
(docs/world.md).

- :mod:`regionclip.world.generator`: scenes, web images, captions, splits and :func:`generate_world`;
- :mod:`regionclip.world.alt_text`: the web split's alt-text captions (generator version 3);
- ``categories_v2.json`` / ``categories_v3.json``: the category tables, shipped as package data and read by
  :func:`categories_table` / :func:`categories`.

``regionclip.data.world`` (its former place) still imports, as this package's generator.
"""

from regionclip.world.generator import (
    CATEGORIES,
    NOVEL_NAMES,
    SEED_STREAM,
    SIZES,
    SPLITS,
    VERSIONS,
    Category,
    WorldInfo,
    categories,
    categories_table,
    generate_world,
    make_caption,
)

__all__ = [
    "CATEGORIES",
    "NOVEL_NAMES",
    "SEED_STREAM",
    "SIZES",
    "SPLITS",
    "VERSIONS",
    "Category",
    "WorldInfo",
    "categories",
    "categories_table",
    "generate_world",
    "make_caption",
]
