import pytest

from train.tacotron2.hparams import PROFILES, HParams, HParamsError


def test_defaults_are_nvidias():
    hp = HParams()
    audio = (hp.n_mel_channels, hp.filter_length, hp.hop_length, hp.win_length)
    assert audio == (80, 1024, 256, 1024)
    assert (hp.encoder_embedding_dim, hp.decoder_rnn_dim, hp.attention_rnn_dim) == (512, 1024, 1024)
    assert (hp.prenet_dim, hp.attention_dim, hp.postnet_embedding_dim) == (256, 128, 512)
    assert (hp.learning_rate, hp.weight_decay, hp.batch_size) == (1e-3, 1e-6, 64)


def test_overrides_are_parsed_to_declared_types():
    hp = HParams.from_overrides("epochs=3, batch_size=8,learning_rate=5e-4,amp=true,"
                                "lr_schedule=cosine,mask_padding=0")
    assert (hp.epochs, hp.batch_size, hp.learning_rate) == (3, 8, 5e-4)
    assert hp.amp is True and hp.mask_padding is False and hp.lr_schedule == "cosine"
    assert HParams.from_overrides({"epochs": "4", "warmup_steps": 10.0}).epochs == 4
    from_json = HParams.from_overrides('{"epochs": 2, "test_sentence": "One, two."}')
    assert (from_json.epochs, from_json.test_sentence) == (2, "One, two.")


def test_overrides_apply_on_a_base_and_profiles_are_valid():
    tiny = HParams.from_overrides(PROFILES["tiny"])
    assert tiny.n_frames_per_step == 3
    assert HParams.from_overrides("epochs=2", base=tiny).prenet_dim == tiny.prenet_dim


def test_round_trip_through_dict():
    hp = HParams.from_overrides("epochs=7,lr_schedule=noam")
    assert HParams.from_dict(hp.to_dict()) == hp


@pytest.mark.parametrize(("overrides", "message"), [
    ("batchsize=3", "batchsize: unknown key; did you mean batch_size?"),
    ("zzz=1", "zzz: unknown key"),
    ("epochs=abc", "epochs='abc': expected int"),
    ("epochs=2.5", "epochs='2.5': expected int"),
    ("amp=maybe", "amp='maybe': expected bool"),
    ("epochs=0", "epochs=0: must be >= 1"),
    ("p_decoder_dropout=1.5", "p_decoder_dropout=1.5: must be <= 0.99"),
    ("lr_schedule=step", "lr_schedule='step': must be one of constant, linear"),
    ("device=tpu", "device='tpu': must be one of auto, cpu, cuda"),
    ("encoder_embedding_dim=63", "encoder_embedding_dim=63: must be even"),
    ("postnet_kernel_size=4", "postnet_kernel_size=4: must be odd"),
    ("mel_fmax=20000", "mel_fmax=20000.0: must be <= sampling_rate / 2"),
    ("epochs", "'epochs': expected key=value"),
    ('{"epochs": 2', "hparams JSON"),
    ('{"epoch": 2}', "epoch: unknown key; did you mean epochs?"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(HParamsError) as info:
        HParams.from_overrides(overrides)
    assert message in str(info.value)


def test_list_hparams_shows_every_field_with_its_default_and_valid_values(capsys):
    from train.__main__ import main

    assert main(["--list-hparams"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {line.split(":")[0] for line in lines if not line.startswith(" ")} \
        == set(HParams.keys())
    assert "learning_rate: float = 0.001 (>= 0.0)" in lines
    assert "val_fraction: float = 0.05 (0.0 to 0.5)" in lines
    assert "lr_schedule: str = \"constant\" (constant | linear | exponential | cosine | noam)" \
        in lines
    assert lines[lines.index("amp: bool = false") + 1].startswith("    mixed precision")


def test_data_and_out_are_required_to_train(capsys):
    from train.__main__ import main

    with pytest.raises(SystemExit):
        main(["--data", "corpus"])
    assert "--data and --out are required" in capsys.readouterr().err
