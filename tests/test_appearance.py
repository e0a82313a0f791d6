"""Appearance variants of a phantom and the appearance-only text-conditioning phase (tiny model).

The phase must never teach a class edit: every target is the source phantom itself imaged
differently (same label, same mask), and a class word in the prompt never changes the target.
"""

from __future__ import annotations

import numpy as np
import pytest

from p2p_desktop.errors import InputError
from p2p_desktop.phantoms import generate_phantom


def test_appearance_overrides_change_the_imaging_not_the_finding():
    base = generate_phantom(7, "malignant", 64)
    assert np.array_equal(base.image, generate_phantom(7, "malignant", 64, appearance={}).image)
    brighter = generate_phantom(7, "malignant", 64, appearance={"gain_db": base.params["imaging"]["gain_db"] + 4})
    assert brighter.image.mean() > base.image.mean() + 0.01
    assert np.array_equal(brighter.mask, base.mask) and brighter.label == base.label
    assert brighter.params["lesion"]["shape"] == base.params["lesion"]["shape"]
    other_speckle = generate_phantom(7, "malignant", 64, appearance={"speckle_seed": 1})
    assert not np.array_equal(other_speckle.image, base.image) and np.array_equal(other_speckle.mask, base.mask)
    with pytest.raises(InputError, match="unknown phantom appearance"):
        generate_phantom(7, "malignant", 64, appearance={"label": "benign"})


def test_appearance_data_has_no_cross_class_pair():
    from p2p_desktop.training.appearance import APPEARANCE, load_appearance_data

    data = load_appearance_data(3_200_000, 3, size=32)
    assert len(data) > 3
    for i in range(len(data)):
        s = data.source[i]
        assert data.labels[i] == data.labels[s] and data.seeds[i] == data.seeds[s]
        if data.factor[i]:
            words = APPEARANCE[data.factor[i]][:2]
            assert any(data.prompts[i].endswith(w) for w in words)
            assert data.prompts[i].startswith(data.prompts[s])
    normal = [i for i in range(len(data)) if data.labels[i] == "normal"]
    assert normal and not any(data.factor[i] in ("posterior_scale", "edge_scale") for i in normal)


def test_appearance_phase_trains_text_path_and_records_probe(tmp_path, tiny_sd_training):
    from p2p_desktop.training.appearance import AppearancePlan, finetune_appearance

    parts = tiny_sd_training.parts
    plan = AppearancePlan(minutes=0.1, n_seeds=3, batch=2, size=32, warmup_steps=1)
    record = finetune_appearance(parts, plan, tmp_path / "scratch")

    assert record["steps"] >= 3 and record["cross_class_targets"] == 0
    assert record["phantoms"]["sources"] == 3 and record["phantoms"]["count"] > 3
    assert np.isfinite(record["final_loss_ema"])
    probe = record["probe_t25_latent"]
    assert set(probe["before"]) == {"faithful_mse", "appearance_mad", "appearance_target_mad", "class_swap_mad"}
    assert probe["before"]["appearance_target_mad"] == probe["after"]["appearance_target_mad"] > 0
    tiny_sd_training.check_trained()
    assert (tmp_path / "scratch" / "appearance-3-32.npy").is_file()


def test_appearance_words_are_single_tokens_of_the_demo_vocabulary(tmp_path):
    from transformers import CLIPTokenizer

    from p2p_desktop.models.tokenizer import build_clip_tokenizer_files
    from p2p_desktop.training.appearance import APPEARANCE

    build_clip_tokenizer_files(tmp_path)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for less, more, _lo, _hi in APPEARANCE.values():
        for phrase in (less, more):
            for word in phrase.split():
                assert len(tok.tokenize(word)) == 1, word


def test_cli_refuses_a_cross_class_base_and_bad_budgets(tmp_path, capsys):
    import json

    from p2p_desktop.training.appearance import main

    base = tmp_path / "base"
    base.mkdir()
    (base / "card.json").write_text(json.dumps({"training": {"counterfactual": {}}}), encoding="utf-8")
    assert main(["--base", str(base), "--out", str(tmp_path / "out"), "--minutes", "1"]) == 2
    assert "cross-class" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["--base", str(base), "--out", str(tmp_path / "out"), "--minutes", "0"]) == 2
