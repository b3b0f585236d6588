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
    assert OFFICIAL_TEMPLATES[0] == "{}." and OFFICIAL_TEMPLATES[1] == "a bad photo of a {}."
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
        "bow_(weapon)": "bow",
        "bow_(decorative_ribbons)": "bow",
        "hot-air_balloon": "hot-air balloon",
        "Dixie_cup": "Dixie cup",
        "bulletin_board": "bulletin board",
        "car_(automobile)": "car",
        "cab_(taxi)": "cab",
        "ball": "ball",
        "teddy_bear": "teddy bear",
        "Lego": "Lego",
        "sweat_pants": "sweat pants",
        "bean_curd": "bean curd",
    }
    assert {n: clean_class_name(n) for n in expected} == expected
    names = list(expected)[:4]
    cleaned = build_concept_bank(micro_model, names, ("{}.", "a photo of a {}."), clean_class_names=True)
    assert cleaned.names == names  # labels keep the verbatim names
    plain = build_concept_bank(
        micro_model, ["bow", "hot-air balloon", "Dixie cup"], ("{}.", "a photo of a {}.")
    )
    assert torch.allclose(cleaned.embeddings[0], plain.embeddings[0], atol=1e-6)
    assert torch.allclose(cleaned.embeddings[1], plain.embeddings[0], atol=1e-6)
    assert torch.allclose(cleaned.embeddings[2], plain.embeddings[1], atol=1e-6)
    assert torch.allclose(cleaned.embeddings[3], plain.embeddings[2], atol=1e-6)
    verbatim = build_concept_bank(micro_model, names, ("{}.", "a photo of a {}."))
    assert not torch.allclose(verbatim.embeddings[0], cleaned.embeddings[0], atol=1e-4)
