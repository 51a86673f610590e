"""Config parsing: types, overrides, and one-line errors that name the key and the nearest valid one."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastctc.config import ConfigError, RunConfig, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.toml"


def test_demo_config_loads_with_public_keys():
    cfg = load_config(DEMO)
    assert cfg.model.checkpoint == ""
    assert cfg.data.corpus == "synthetic"
    assert cfg.train.max_steps > 0 and cfg.train.batch_size > 0 and cfg.optim.lr > 0


def test_overrides_are_coerced_to_the_field_type():
    cfg = load_config(
        DEMO,
        [
            "optim.lr=3e-4",
            "train.batch_size=7",
            "optim.warmup_steps=0",
            "model.do_stable_layer_norm=false",
            "model.conv_dim=[8, 8]",
            "model.conv_kernel=[3,3]",
            "model.conv_stride=[2,2]",
            "data.root=/some/where",
            "train.seed=3",
            "optim.weight_decay=0",
        ],
    )
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == 7 and isinstance(cfg.train.batch_size, int)
    assert cfg.model.encoder["do_stable_layer_norm"] is False
    assert cfg.model.encoder["conv_dim"] == [8, 8]
    assert cfg.data.root == "/some/where"
    assert isinstance(cfg.optim.weight_decay, float)  # an int literal is accepted for a float key


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.batch_sise=8", "unknown key train.batch_sise; did you mean 'batch_size'?"),
        ("optim.lr=fast", "optim.lr: expected float, got str 'fast'"),
        ("train.batch_size=2.5", "train.batch_size: expected int"),
        ("train.batch_size=true", "train.batch_size: expected int"),
        ("train.batch_size=0", "train.batch_size: must be > 0, got 0"),
        ("optim.lr=-1", "optim.lr: must be > 0"),
        ("model.hidden_dropout=1.5", "model.hidden_dropout: must be in [0, 1)"),
        ("model.num_attention_heads=5", "model.num_attention_heads: must divide model.hidden_size"),
        ("data.corpus=synthetc", "data.corpus: unknown corpus 'synthetc'; did you mean 'synthetic'?"),
        ("trian.epochs=3", "unknown section [trian]; did you mean 'train'?"),
        ("train.epochs", "expected section.key=value"),
        ("model.checkpoint=/does/not/exist", "model.checkpoint: '/does/not/exist' is not a directory"),
        ("model.conv_dim=[8, 8]", "model.conv_dim"),
        ("optim.schedule=tristage", "optim.schedule: unknown schedule 'tristage'; did you mean 'tri_stage'?"),
        ("optim.phase_ratio=[0.1, 0.4, 0.4]", "optim.phase_ratio: must be three fractions (warmup, hold, decay)"),
        ("optim.phase_ratio=[0.5, 0.5]", "optim.phase_ratio: must be three fractions"),
        ("optim.final_lr_scale=0", "optim.final_lr_scale: must be in (0, 1]"),
        ("optim.init_lr_scale=1.5", "optim.init_lr_scale: must be in [0, 1]"),
        ("train.freeze_finetune_steps=-1", "train.freeze_finetune_steps: must be >= 0"),
        ("train.weight_average=swa", "train.weight_average: must be off, ema or mean, got 'swa'"),
        ("train.ema_decay=1", "train.ema_decay: must be in (0, 1)"),
        ("train.average_period=0", "train.average_period: must be >= 1"),
    ],
)
def test_bad_overrides_fail_with_the_key_named(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_check_paths_off_skips_the_folder_checks_alone(tmp_path):
    """A caller that learns a folder before writing it (bench recipe --make-checkpoint) loads the config with
    check_paths=False: the missing folders are read as given, every other check still runs."""
    missing = tmp_path / "not-yet"
    keys = [f"model.checkpoint={missing}", f"augment.noise_dir={missing}", "augment.noise_prob=0.5"]
    with pytest.raises(ConfigError, match="model.checkpoint: .* is not a directory"):
        load_config(DEMO, keys)
    with pytest.raises(ConfigError, match="augment.noise_dir: .* is not a directory"):
        load_config(DEMO, keys[1:])
    cfg = load_config(DEMO, keys, check_paths=False)
    assert cfg.model.checkpoint == str(missing) and cfg.augment.noise_dir == str(missing)
    with pytest.raises(ConfigError, match="optim.lr: must be > 0"):
        load_config(DEMO, keys + ["optim.lr=-1"], check_paths=False)
    with pytest.raises(ConfigError, match="augment.noise_dir: augment.noise_prob=0.5 needs a folder"):
        load_config(DEMO, ["augment.noise_prob=0.5"], check_paths=False)
    missing.mkdir()
    assert load_config(DEMO, keys).model.checkpoint == str(missing)


def test_unknown_key_in_file_names_file_and_nearest(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlearning_rate = 1e-3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key optim.learning_rate"):
        load_config(bad)
    bad.write_text("[optim]\nwarmup_step = 10\n")
    with pytest.raises(ConfigError, match="did you mean 'warmup_steps'"):
        load_config(bad)
    bad.write_text("lr = 1\n")
    with pytest.raises(ConfigError, match="must be a \\[section\\]"):
        load_config(bad)


def test_missing_file_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def _float_keys():
    """Every float key of the config, [model]'s encoder fields included (section.key, is a list)."""
    import typing

    from fastctc.config import _ENCODER_TYPES, _SECTION_CLASSES, ENCODER_KEYS

    for section, cls in _SECTION_CLASSES.items():
        hints = typing.get_type_hints(cls)
        if section == "model":
            hints = {k: t for k, t in hints.items() if k != "encoder"} | {k: _ENCODER_TYPES[k] for k in ENCODER_KEYS}
        for key, t in hints.items():
            if t is float or typing.get_args(t) == (float,):
                yield f"{section}.{key}", t is not float


def test_every_float_key_refuses_non_finite_values(tmp_path):
    keys = list(_float_keys())
    assert {"optim.lr", "optim.betas", "data.max_duration_s", "model.hidden_dropout"} <= {k for k, _ in keys}
    for key, is_list in keys:
        for literal in ("inf", "-inf", "nan", "1e999"):
            value = f"[0.9, {literal}]" if is_list else literal
            with pytest.raises(ConfigError) as err:
                load_config(DEMO, [f"{key}={value}"])
            name = f"{key}[1]" if is_list else key
            assert str(err.value).startswith(f"--set: {name}: must be a finite number, got "), str(err.value)
    in_file = tmp_path / "nan.toml"
    in_file.write_text("[optim]\nlr = nan\n")
    with pytest.raises(ConfigError, match=r"nan.toml: optim.lr: must be a finite number, got nan$"):
        load_config(in_file)


def test_an_empty_config_or_one_without_sections_is_refused(tmp_path):
    for text in ("", "# only a comment\n\n"):
        empty = tmp_path / "empty.toml"
        empty.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(empty)
        assert str(err.value) == (
            f"{empty}: no [section] in the file; a config sets [model], [data], [optim] and "
            "[train] keys: start from configs/demo.toml"
        )


def test_config_encoding_strict_utf8_and_a_bom_is_accepted(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[data]\nroot = "/data"\n# café\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(latin1)
    assert str(err.value) == (
        f"{latin1}:3: not UTF-8 (byte 0xe9); TOML files are UTF-8: convert it, e.g. "
        f"iconv -f latin1 -t utf-8 {latin1} > fixed.toml"
    )
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + DEMO.read_bytes())  # as Windows Notepad saves it
    assert load_config(bom) == load_config(DEMO)


def test_cli_refuses_a_non_finite_learning_rate_in_one_line(tmp_path, capsys):
    from fastctc.cli import main

    out = tmp_path / "run"
    assert main(["train", str(DEMO), "--set", "optim.lr=inf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "fastctc train: config error: --set: optim.lr: must be a finite number, got inf\n"
    assert not out.exists()


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(DEMO, ["optim.lr=1.5e-3", 'data.root=a "quoted" path'])
    path = tmp_path / "resolved.toml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert load_config(None) == RunConfig()


def test_cli_reports_config_errors_in_one_line_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "train", str(DEMO), "--set", "train.bach_size=4", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "fastctc train: config error: --set: unknown key train.bach_size; did you mean 'batch_size'?"
    )
    assert not out.exists()  # nothing was started


def test_cli_version_and_help():
    from fastctc import __version__

    proc = subprocess.run([sys.executable, "-m", "fastctc", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastctc {__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "fastctc", "train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "fastctc train configs/demo.toml" in proc.stdout and "--set" in proc.stdout


def _checkpoint_dir(tmp_path, **changes):
    import dataclasses
    import json

    from fastctc.models import EncoderConfig, config_to_hf

    enc = EncoderConfig(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embedding_groups=4,
    )
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config_to_hf(dataclasses.replace(enc, **changes))))
    return tmp_path / "ckpt"


def test_encoder_resolves_from_the_checkpoint_then_the_recipe_then_model_keys(tmp_path):
    from fastctc.config import resolve_encoder
    from fastctc.models.hf_weights import read_encoder_config

    ckpt = _checkpoint_dir(
        tmp_path, hidden_dropout=0.1, attention_dropout=0.1, mask_time_min_masks=5, mask_feature_prob=0.2
    )
    toml = tmp_path / "run.toml"
    toml.write_text(f'[model]\ncheckpoint = "{ckpt}"\nattention_dropout = 0.05\n')
    cfg = load_config(toml)
    enc = resolve_encoder(cfg.model, read_encoder_config(ckpt))
    assert (enc.hidden_size, enc.num_hidden_layers, enc.conv_stride, enc.frame_stride) == (64, 3, (5, 2), 10)
    # the script's config.update values, over the checkpoint's (its mask_feature_prob flag defaults to 0.0)
    assert enc.hidden_dropout == 0.0 and enc.mask_feature_prob == 0.0
    assert enc.attention_dropout == 0.05  # [model]'s
    assert enc.mask_time_min_masks == 5  # no script flag: the checkpoint's


@pytest.mark.parametrize(
    "key, ours, theirs",
    [
        ("hidden_size", "32", "64"),
        ("conv_stride", "[5, 3]", "[5, 2]"),
        ("hidden_act", '"relu"', '"gelu"'),
        ("model_type", '"hubert"', '"wav2vec2"'),
    ],
)
def test_shape_keys_beside_a_checkpoint_must_be_its_own(tmp_path, key, ours, theirs):
    from fastctc.config import resolve_encoder
    from fastctc.models.hf_weights import read_encoder_config

    ckpt = _checkpoint_dir(tmp_path)
    toml = tmp_path / "run.toml"
    toml.write_text(f'[model]\ncheckpoint = "{ckpt}"\n{key} = {ours}\n')
    with pytest.raises(
        ConfigError,
        match=rf"^model\.{key}: {re.escape(ours)} here, but the checkpoint's config.json "
        rf"says {re.escape(theirs)}, and its encoder's shape is its own; drop",
    ):
        resolve_encoder(load_config(toml).model, read_encoder_config(ckpt))
    toml.write_text(f'[model]\ncheckpoint = "{ckpt}"\n{key} = {theirs}\n')  # the same value ignores nothing
    assert resolve_encoder(load_config(toml).model, read_encoder_config(ckpt)) == read_encoder_config(ckpt)


def test_from_scratch_any_encoder_field_is_a_model_key_and_type_checked():
    from fastctc.config import resolve_encoder

    cfg = load_config(
        DEMO,
        [
            "model.hidden_act=relu",
            "model.layer_norm_eps=1e-6",
            "model.mask_feature_prob=0.1",
            "model.model_type=hubert",
        ],
    )
    enc = resolve_encoder(cfg.model)
    assert (enc.hidden_act, enc.layer_norm_eps, enc.mask_feature_prob, enc.model_type) == ("relu", 1e-6, 0.1, "hubert")
    assert (enc.hidden_size, enc.conv_dim) == (96, (48,) * 7)  # demo.toml's
    for override, message in [
        ("model.hidden_act=tanh", "model.hidden_act: must be one of"),
        ("model.layer_norm_eps=true", "model.layer_norm_eps: expected float"),
        ("model.vocab_size=8", "unknown key model.vocab_size"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(DEMO, [override])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("augment.speed_prob=0.5", "set augment.speed_prob = 0 (or random_streams = own)"),
        ("train.grad_accum=2", "set train.grad_accum = 1 (or random_streams = own)"),
        ("train.random_streams=trainer", "train.random_streams: must be own or recipe, got 'trainer'"),
    ],
)
def test_the_recipes_random_streams_refuse_what_they_cannot_replay(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(DEMO, ["train.random_streams=recipe", override])
    assert load_config(DEMO, ["train.random_streams=recipe"]).train.random_streams == "recipe"


def test_recipe_convention_switches_default_to_fastctc_and_are_checked():
    from fastctc.config import RECIPE_EXACT, SAMPLERS

    cfg = load_config(DEMO)
    assert (cfg.data.sampler, cfg.data.trailing_delimiter, cfg.model.bos_eos_tokens, cfg.train.zero_infinity) == (
        "buckets",
        False,
        False,
        True,
    )
    exact = load_config(DEMO, list(RECIPE_EXACT))
    assert (
        exact.data.sampler,
        exact.data.trailing_delimiter,
        exact.model.bos_eos_tokens,
        exact.train.zero_infinity,
    ) == ("group_by_length", True, True, False)
    assert (cfg.train.random_streams, exact.train.random_streams) == ("own", "recipe")
    assert (
        load_config(DEMO, list(RECIPE_EXACT) + ["data.sampler=buckets"]).data.sampler == "buckets"
    )  # a later --set wins
    assert set(SAMPLERS) == {"buckets", "group_by_length"}
    for override, fragment in [
        (
            "data.sampler=group_by_lenght",
            "data.sampler: unknown sampler 'group_by_lenght'; did you mean 'group_by_length'?",
        ),
        ("data.trailing_delimiter=1", "data.trailing_delimiter: expected bool"),
        ("train.zero_infinity=no", "train.zero_infinity: expected bool"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load_config(DEMO, [override])
    with pytest.raises(ConfigError, match="data.sampler: group_by_length cuts batches of train.batch_size"):
        load_config(DEMO, ["data.sampler=group_by_length", "data.batch_seconds=30"])
    with pytest.raises(ConfigError, match="data.trailing_delimiter: phone targets"):
        load_config(
            DEMO,
            [
                "data.corpus=manifest",
                "data.train=a.jsonl",
                "data.eval=b.jsonl",
                "data.targets=phones",
                "data.trailing_delimiter=true",
            ],
        )
    # the switches survive the run directory's config.toml
    assert load_config_text(dump_config(exact)) == exact


def load_config_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_text(text)
        return load_config(path)


def test_a_choice_is_checked_from_its_declared_type_and_the_message_lists_the_choices():
    """Literal-typed fields: a value outside the declared choices names the key, the value and every
    choice; a near miss also reads as a misspelling; the type is checked when the value is set."""
    import typing

    from fastctc.config import DataConfig, TrainConfig

    for override, message in [
        ("train.device=gpu", "train.device: unknown device 'gpu'; did you mean 'cpu'? (must be auto, cpu or cuda)"),
        ("train.precision=double", "train.precision: must be auto, fp32, bf16 or fp16, got 'double'"),
        ("data.phone_set=50", "data.phone_set: must be 61, 48 or 39, got 50"),
        ("model.attention_mask=yes", "model.attention_mask: must be auto, on or off, got 'yes'"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(DEMO, [override])
        assert str(err.value) == message
    with pytest.raises(ConfigError, match=r"^--set: data.phone_set: expected int, got str '48'$"):
        load_config(DEMO, ['data.phone_set="48"'])
    # the choices the check uses are the declared ones, whatever the default
    assert typing.get_args(typing.get_type_hints(TrainConfig)["device"]) == ("auto", "cpu", "cuda")
    assert load_config(DEMO, ["data.phone_set=61"]).data.phone_set == 61 and DataConfig().phone_set == 48


def test_encoder_keys_are_typed_fields_read_as_the_mapping_of_those_set():
    cfg = load_config(DEMO, ["model.hidden_dropout=0", "model.conv_bias=true"])
    enc = cfg.model.encoder
    assert enc.hidden_dropout == 0.0 and isinstance(enc.hidden_dropout, float)  # an int literal, as a float
    assert enc.conv_bias is True and enc.hidden_act is None  # not set: None
    assert "hidden_act" not in enc and enc.get("hidden_act", "unset") == "unset"
    assert {"hidden_dropout", "conv_bias"} <= set(enc) and enc["conv_bias"] is True
    assert "model.hidden_act" not in dump_config(cfg) and "conv_bias = true" in dump_config(cfg)
