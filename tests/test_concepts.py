"""Concept bank: the official templates and cleaning, template-mean of unnormalised features, saving,
caching, official .pth files, and bad names."""

from __future__ import annotations

import pytest
import torch

import regionclip
from regionclip.concepts import (
    OFFICIAL_TEMPLATES,
    ConceptBank,
    build_concept_bank,
    clean_class_name,
    clean_name,
    load_official_embeddings,
    make_prompts,
)
from regionclip.errors import RegionCLIPError


def test_official_templates_and_cleaning():
    assert len(OFFICIAL_TEMPLATES) == 81 and len(set(OFFICIAL_TEMPLATES)) == 81
    assert OFFICIAL_TEMPLATES[0] == "{}." and OFFICIAL_TEMPLATES[1] == "a photo of a {}."
    assert all("{}" in t for t in OFFICIAL_TEMPLATES)
    assert clean_name("hot dog, sausage+bun_x") == "hot dog sausage bun_x"
    assert make_prompts("teddy bear", ("{}.", "a photo of the {}."))[1] == "a photo of the teddy bear."


def test_bank_is_the_mean_of_unnormalised_template_features(micro_model):
    templates = ("{}.", "a photo of a {}.", "a drawing of the {}.")
    bank = build_concept_bank(micro_model, ["cat", "fire hydrant"], templates=templates)
    with torch.no_grad():
        manual = []
        for name in ["cat", "fire hydrant"]:
            feats = micro_model.encode_text(micro_model.tokenize([t.format(name) for t in templates]))
            manual.append(feats.mean(0))
    assert bank.embeddings.shape == (2, micro_model.embed_dim)
    assert torch.allclose(bank.embeddings, torch.stack(manual), atol=1e-5)
    assert not torch.allclose(bank.embeddings.norm(dim=-1), torch.ones(2))  # not normalised
    assert torch.allclose(bank.normalized().norm(dim=-1), torch.ones(2))


def test_save_load_and_cache(tmp_path, micro_model, monkeypatch):
    bank = build_concept_bank(micro_model, ["dog", "umbrella"], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("bank-*.safetensors"))) == 1
    calls = []
    original = micro_model.encode_text
    monkeypatch.setattr(micro_model, "encode_text", lambda t: calls.append(1) or original(t))
    again = build_concept_bank(micro_model, ["dog", "umbrella"], cache_dir=tmp_path)
    assert calls == [] and torch.equal(again.embeddings, bank.embeddings)
    build_concept_bank(micro_model, ["dog", "cat"], cache_dir=tmp_path)  # other names: a miss
    assert calls
    path = bank.save(tmp_path / "bank.safetensors")
    loaded = ConceptBank.load(path)
    assert loaded.names == ["dog", "umbrella"] and torch.equal(loaded.embeddings, bank.embeddings)


def test_official_pth_files(tmp_path):
    torch.save(torch.randn(3, 8), tmp_path / "emb.pth")
    (tmp_path / "names.txt").write_text("cat\n\ndog\nhot dog\n", encoding="utf-8")
    bank = load_official_embeddings(tmp_path / "emb.pth", tmp_path / "names.txt")
    assert bank.names == ["cat", "dog", "hot dog"] and bank.dim == 8
    torch.save(torch.randn(8), tmp_path / "one.pth")  # the official script squeezes a single name to [D]
    assert load_official_embeddings(tmp_path / "one.pth", ["cat"]).embeddings.shape == (1, 8)
    with pytest.raises(RegionCLIPError, match=r"\(3, 8\) do not match 2 names"):
        load_official_embeddings(tmp_path / "emb.pth", ["a", "b"])


def test_dimension_mismatch_names_both_dimensions():
    bank = ConceptBank(["cat"], torch.randn(1, 640))
    with pytest.raises(RegionCLIPError, match="640-d.*1024-d"):
        bank.check_dim(1024)


@pytest.mark.parametrize(
    "names,message",
    [
        ([], "empty"),
        (["cat", 3], "entry 1 is int"),
        (["cat", "cat"], "duplicate names: .cat."),
        (["cat", " "], "blank"),
        ("cat", "single string"),
    ],
)
def test_bad_names(micro_model, names, message):
    with pytest.raises(RegionCLIPError, match=message):
        build_concept_bank(micro_model, names)


def test_non_utf8_names_file(tmp_path):
    from regionclip.concepts import read_names_file

    (tmp_path / "n.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(RegionCLIPError, match="not UTF-8"):
        read_names_file(tmp_path / "n.txt")


def test_top_level_api():
    assert regionclip.build_concept_bank is build_concept_bank


def test_lvis_class_names_are_cleaned_like_the_official_get_cls_names(micro_model):
    # real LVIS v1 names, with the text the official get_cls_names prompts (written out by hand)
    expected = {
        "bow_(weapon)": "bow weapon",
        "bow_(decorative_ribbons)": "bow decorative ribbons",
        "hot-air_balloon": "hot-air balloon",
        "Dixie_cup": "Dixie cup",
        "bulletin_board": "bulletin board",
        "car_(automobile)": "car automobile",
        "cab_(taxi)": "cab taxi",
        "ball": "ball",
        "teddy_bear": "teddy bear",
        "Lego": "Lego",
        "sweat_pants": "sweat pants",
        "bean_curd": "bean curd",
        "ski_parka": "ski parka",
    }
    assert {n: clean_class_name(n) for n in expected} == expected
    names = list(expected)[:5]
    cleaned = build_concept_bank(micro_model, names, ("{}.", "a photo of a {}."), clean_class_names=True)
    assert cleaned.names == names  # labels keep the verbatim names
    plain = build_concept_bank(
        micro_model,
        ["bow weapon", "bow decorative ribbons", "hot-air balloon", "Dixie cup", "bulletin board"],
        ("{}.", "a photo of a {}."),
    )
    assert torch.allclose(cleaned.embeddings, plain.embeddings, atol=1e-6)
    verbatim = build_concept_bank(micro_model, names, ("{}.", "a photo of a {}."))
    assert not torch.allclose(verbatim.embeddings[0], cleaned.embeddings[0], atol=1e-4)


# The official get_prompt_templates list (RegionCLIP, detectron2/data/datasets/clip_prompt_utils.py), in its
# order, written out here as data so that the test pins the reference rather than our own construction.
OFFICIAL_81 = [
    "{}.", "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.",
    "the plushie {}.", "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
]  # fmt: skip


def test_templates_equal_the_official_list_in_order():
    assert len(OFFICIAL_81) == 81 and len(set(OFFICIAL_81)) == 81
    assert list(OFFICIAL_TEMPLATES) == OFFICIAL_81
    # the official prompt_engineering: commas removed, '+' -> space, then the template is filled
    assert make_prompts("hot dog, sausage+bun", OFFICIAL_81[:2]) == [
        "hot dog sausage bun.",
        "a photo of a hot dog sausage bun.",
    ]
