"""Run configs: profiles, precedence, validation messages and derived names."""

from __future__ import annotations

import pytest

from hcae.errors import RunConfigError
from hcae.run_config import PROFILES, SMOKE_MODEL_SIZE, build_run_config, flatten, load_run_config, set_dotted


def test_quick_is_the_default_profile():
    run = build_run_config({})
    assert run.profile == "quick"
    assert run.training.distill.steps == 130
    assert run.training.contrastive.steps == 26
    assert run.model == {"preset": "v1.0"}


def test_file_values_beat_profile():
    run = build_run_config({"profile": "full", "training": {"distill": {"steps": 7}}})
    assert run.training.distill.steps == 7
    assert run.training.distill.batch_size == PROFILES["full"]["training"]["distill"]["batch_size"]


def test_smoke_shrinks_model_keeps_toggles():
    run = build_run_config({"profile": "smoke", "model": {"preset": "v1.1"}})
    config = run.model_config()
    assert config.hidden_size == SMOKE_MODEL_SIZE["hidden_size"]
    assert config.feed_forward == "swiglu"
    assert config.layer_scale_init == 1e-5
    assert config.prompts == {"query": "query: ", "document": "passage: "}
    assert config.mixer_types == ["conv"] * 4 + ["attn"] * 4


def test_new_preset_replaces_model_section():
    run = build_run_config({"model": {"preset": "v1.0", "conv_kernel_size": 5}})
    assert run.model_config().conv_kernel_size == 5
    from hcae.run_config import merge

    merged = merge({"model": {"preset": "v1.0", "conv_kernel_size": 5}}, {"model": {"preset": "v1.1"}})
    assert merged["model"] == {"preset": "v1.1"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"profile": "huge"}, "profile='huge' is invalid"),
        ({"training": {"distil": {}}}, "unknown key 'training.distil'"),
        ({"training": {"distill": {"steps": "many"}}}, "training.distill.steps='many' is invalid: it must be an integer"),
        ({"training": {"distill": {"steps": 0}}}, "training.distill.steps=0 is invalid"),
        ({"training": {"distill": {"learning_rate": 2.0}}}, "learning_rate=2.0 is invalid"),
        ({"training": {"init": "pretrained"}}, "training.init='pretrained' is invalid"),
        ({"training": {"bf16": "yes"}}, "training.bf16='yes' is invalid"),
        ({"training": {"contrastive": {"datasets": ["msmarco"]}}}, "unknown 'msmarco'"),
        ({"evaluation": {"precision": "fp8"}}, "evaluation.precision='fp8' is invalid"),
        ({"evaluation": {"splits": ["train"]}}, "evaluation.splits has unknown 'train'"),
        ({"architecture": "lstm"}, "architecture='lstm' is invalid"),
        ({"model": {"preset": "v1.0", "pooling": "sum"}}, "pooling='sum' is invalid"),
        ({"training": {"distill": {"max_seq_length": 1024}}}, "max_position_embeddings=512"),
        ({"training": {"init": "random", "distill": {"enabled": False}, "contrastive": {"enabled": False}}}, "would evaluate noise"),
    ],
)
def test_invalid_values_named(values, message):
    with pytest.raises(RunConfigError) as caught:
        build_run_config(values, source="test.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("test.yaml: ")


def test_learning_rate_string_accepted():
    # YAML 1.1 reads 5e-4 without a dot as a string
    assert build_run_config({"training": {"distill": {"learning_rate": "5e-4"}}}).training.distill.learning_rate == 5e-4


def test_display_name_shows_knobs():
    assert build_run_config({"model": {"preset": "v1.1"}, "seed": 2}).display_name() == "v1.1-4c4a-swiglu-ls1e-05-pfx-s2"
    assert build_run_config({"model": {"preset": "v1.0"}}).display_name() == "v1.0-5c3a-gelu-s0"
    assert build_run_config({"architecture": "static"}).display_name() == "static-teacher-s0"
    assert build_run_config({"name": "mine"}).display_name() == "mine"


def test_fingerprint_ignores_name_only():
    base = build_run_config({"seed": 1})
    assert base.fingerprint() == build_run_config({"seed": 1, "name": "other"}).fingerprint()
    assert base.fingerprint() != build_run_config({"seed": 2}).fingerprint()


def test_load_with_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("profile: smoke\nmodel: {preset: v1.1}\n")
    run = load_run_config(path, {"training.distill.steps": 3, "seed": 9})
    assert run.training.distill.steps == 3
    assert run.seed == 9
    with pytest.raises(RunConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.yaml")


def test_set_dotted_and_flatten():
    values: dict = {}
    set_dotted(values, "a.b.c", 1)
    assert values == {"a": {"b": {"c": 1}}}
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
