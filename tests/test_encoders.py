import shutil

import pytest
import torch

from bertfit.errors import ModelError
from bertfit.models.encoders import DEFAULT_SHA256, default_encoder, resolve_encoder, sha256_file


def test_default_encoder_is_verified():
    encoder = default_encoder()
    assert encoder.kind == "hf" and (encoder.path / "model.safetensors").is_file()
    assert resolve_encoder("default").path == encoder.path


def test_corrupted_default_weights_are_refused(tmp_path):
    original = default_encoder().path
    copy = tmp_path / "model"
    shutil.copytree(original, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"checksum mismatch \\(expected sha256 {DEFAULT_SHA256}"):
        default_encoder(copy)
    assert (
        sha256_file(original / "model.safetensors") == DEFAULT_SHA256
    )  # the real one is untouched


def test_local_folder_checks(tiny_bert, tmp_path):
    assert resolve_encoder(str(tiny_bert)).kind == "hf"
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights in the folder"):
        resolve_encoder(str(broken))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_encoder(str(tmp_path / "empty"))


def test_pytorch_bin_folder_loads_with_weights_only(tiny_bert, tmp_path):
    import torch
    from safetensors.torch import load_file

    from bertfit.models.classifier import build_classifier

    folder = tmp_path / "bin-model"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(tiny_bert / name, folder / name)
    torch.save(load_file(tiny_bert / "model.safetensors"), folder / "pytorch_model.bin")
    model = build_classifier(resolve_encoder(str(folder)), ["a", "b"])
    reference = load_file(tiny_bert / "model.safetensors")
    key = next(k for k in reference if k.endswith("word_embeddings.weight"))
    assert torch.equal(model.state_dict()["bert." + key.removeprefix("bert.")], reference[key])


def test_hub_name_offline_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="offline and not in the local cache.*--model DIR"):
        resolve_encoder("beomi/kcbert-base-not-cached")


def test_half_precision_checkpoint_trains_in_float32(tiny_bert, tmp_path):
    """Hub checkpoints are often fp16: fine-tuning must still keep float32 master weights."""
    import shutil

    from transformers import BertModel

    from bertfit.models.classifier import build_classifier
    from bertfit.models.encoders import resolve_encoder

    half = tmp_path / "half"
    shutil.copytree(tiny_bert, half)
    BertModel.from_pretrained(tiny_bert).half().save_pretrained(half)
    model = build_classifier(resolve_encoder(str(half)), ["a", "b"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}
