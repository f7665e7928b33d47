"""MusicGen through the audio backend: Hub-style folders loaded with from_pretrained (LoRA / full / scratch),
training through the studio's loop, the delay-pattern labels, seeded generation, and save/load round trips.

No network: the "Hub model" is a tiny MusicgenForConditionalGeneration (a one-layer T5, a few-channel EnCodec
with two 32-entry codebooks at 8 kHz, a two-layer decoder) built from a config and saved with
save_pretrained, with a word-level tokenizer, loaded by the same code path as facebook/musicgen-small."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studio.models.audio import AudioBackend
from studio.training.config import TrainConfig
from studio.training.loop import train_in_process

RATE = 8000        # the tiny EnCodec's sample rate
FILE_RATE = 16000  # the clips are written at another rate: loading resamples them
CLIP = 0.25        # seconds: 32 EnCodec frames at 125 frames/s
CAPTIONS = ["low hum", "high beep", "low tone", "high tone"]
FREQUENCIES = [250.0, 1000.0, 375.0, 1500.0]  # multiples of the 125 Hz frame rate: every frame alike
WORDS = ["<pad>", "</s>", "<unk>", "a", "low", "high", "hum", "beep", "tone", "bright", "dark"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def word_tokenizer():
    """A T5-like tokenizer that works offline: whole words, </s> after every caption, <pad> = 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny MusicGen saved like a Hub checkpoint (config.json, model.safetensors, generation_config.json,
    tokenizer, preprocessor_config.json). The T5 is narrower than the decoder, so the text-to-decoder
    projection exists, as in musicgen-small."""
    import torch
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)

    text = T5Config(vocab_size=len(WORDS), d_model=12, d_kv=6, d_ff=24, num_layers=1, num_heads=2, pad_token_id=0,
                    eos_token_id=1, decoder_start_token_id=0)
    audio = EncodecConfig(sampling_rate=RATE, audio_channels=1, num_filters=4, num_residual_layers=1,
                          upsampling_ratios=[8, 8], codebook_size=32, codebook_dim=8, hidden_size=8,
                          target_bandwidths=[1.25], normalize=False, chunk_length_s=None, overlap=None,
                          num_lstm_layers=1, compress=2, kernel_size=3, last_kernel_size=3, residual_kernel_size=3)
    decoder = MusicgenDecoderConfig(vocab_size=32, max_position_embeddings=256, num_hidden_layers=2, ffn_dim=32,
                                    num_attention_heads=2, hidden_size=16, num_codebooks=2, pad_token_id=32,
                                    bos_token_id=32)
    torch.manual_seed(1234)  # not the configs' seed: 'scratch' must not rebuild the same decoder
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder))
    with torch.no_grad():  # what training would have given a random model: codebooks the clips' frames fall
        # into (EnCodec starts them at zero: every frame would be code 0) and codebook heads large enough for
        # confident predictions (LoRA on attention alone cannot grow them)
        t = torch.arange(RATE // 4) / RATE
        probe = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (125.0, 500.0, 1000.0, 2000.0)])[:, None]
        scale = float(model.audio_encoder.encoder(probe).std())
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape) * scale)
        for head in model.decoder.lm_heads:
            head.weight.normal_(0.0, 1.0)
    model.generation_config.decoder_start_token_id = 32  # as on the Hub: the start token is in generation_config
    model.generation_config.pad_token_id = 32
    folder = tmp_path_factory.mktemp("hub") / "tiny-musicgen"
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=RATE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four captioned sine clips (manifest rows relative to the returned root)."""
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(int(CLIP * FILE_RATE)) / FILE_RATE
    rows = []
    for number, (caption, frequency) in enumerate(zip(CAPTIONS, FREQUENCIES)):
        sf.write(str(root / f"clip{number}.wav"), 0.5 * np.sin(2 * np.pi * frequency * t), FILE_RATE)
        rows.append({"id": number, "split": "train", "file": f"clip{number}.wav", "caption": caption})
    return root, {"train": rows, "validation": []}


def small_config(**changes) -> TrainConfig:
    base = {"audio": {"clip_seconds": CLIP}, "per_device_train_batch_size": 4, "seed": 0, "use_cpu": True,
            "warmup_steps": 0, "lr_scheduler_type": "constant", "eval_steps": 1000, "save_steps": 1000}
    return TrainConfig.model_validate({**base, **changes})


def first_batch(backend, handle, clips, config):
    root, rows = clips
    data = backend.datasets(handle, rows, root, config)["train"]
    return backend.collate(handle, config)([data[i] for i in range(len(data))])


def logits_of(handle, batch):
    """The decoder's logits on ``batch`` (eval mode, no dropout)."""
    import torch

    from studio.models.musicgen import audio_codes, delayed_labels

    model = handle.module.model
    was_training = handle.module.training
    handle.module.eval()
    with torch.no_grad():
        labels = delayed_labels(model, audio_codes(model, batch["input_values"], batch["lengths"]))
        out = model(input_ids=batch["caption_ids"], attention_mask=batch["caption_mask"], labels=labels)
    handle.module.train(was_training)
    return out.logits


def nudge(handle, scale=0.05):
    """Moves every trainable weight (a LoRA B starts at zero: this makes the adapter matter)."""
    import torch

    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in handle.trainable_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def moved_and_saved(tiny_folder, clips, method, folder):
    """(backend, config, handle, batch): a handle whose trainable weights moved, saved to ``folder``."""
    backend = AudioBackend()
    config = small_config()
    handle = backend.load(str(tiny_folder), method, config)
    nudge(handle)
    backend.save(handle, folder)
    return backend, config, handle, first_batch(backend, handle, clips, config)


def wav(sample) -> np.ndarray:
    return sf.read(str(sample.path))[0]


# ----------------------------------------------------------------------------- loading and training

@pytest.mark.parametrize("method, learning_rate", [("lora", 3e-2), ("full", 1e-2), ("scratch", 1e-2)])
def test_each_method_loads_freezes_the_encoders_and_learns_through_the_loop(tiny_folder, clips, tmp_path,
                                                                           method, learning_rate):
    import torch
    from safetensors.torch import load_file

    backend = AudioBackend()
    config = small_config(max_steps=20, learning_rate=learning_rate, gradient_checkpointing=method == "scratch")
    handle = backend.load(str(tiny_folder), method, config)
    model = handle.module.model
    trainable, total = handle.parameter_counts()
    assert 0 < trainable < total
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())
    names = [name for name, p in handle.module.named_parameters() if p.requires_grad]
    if method == "lora":
        assert names and all("lora_" in name and ".decoder." in name for name in names)
        assert any("encoder_attn" in name for name in names) and any("self_attn" in name for name in names)
    else:
        assert all(name.startswith(("model.decoder.", "model.enc_to_dec_proj.")) for name in names)
        assert any(name.startswith("model.enc_to_dec_proj.") for name in names)
        pretrained = load_file(str(tiny_folder / "model.safetensors"))
        head = model.decoder.lm_heads[0].weight
        assert torch.equal(head, pretrained["decoder.lm_heads.0.weight"]) == (method == "full")
        assert torch.equal(model.text_encoder.shared.weight, pretrained["text_encoder.shared.weight"])
    handle.module.train()
    assert not model.text_encoder.training and not model.audio_encoder.training and model.decoder.training

    root, rows = clips
    out = train_in_process(backend, handle, rows, root, config, tmp_path / "run")
    assert out["status"] == "completed" and out["steps"] == 20
    losses = [h["value"] for h in out["history"] if h["name"] == "train_loss"]
    assert all(np.isfinite(losses)) and len(losses) == 20
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
    saved = Path(out["checkpoints"][-1]) / "model"  # the loop saved through the backend
    assert json.loads((saved / "studio_model.json").read_text())["family"] == "musicgen"


def test_resume_from_a_checkpoint_continues_the_run_and_samples_during_training(tiny_folder, clips, tmp_path):
    from studio.training.loop import Hooks, train

    backend = AudioBackend()
    root, rows = clips
    seen = []
    hooks = Hooks(log=lambda message: None, samples=lambda step, samples: seen.append((step, samples)))

    def run(max_steps, resume_from=None):
        config = small_config(max_steps=max_steps, learning_rate=1e-2, sample_steps=4, sample_prompts=["low hum"])
        handle = backend.load(str(tiny_folder), "full", config)
        return train(backend, handle, rows, root, config, tmp_path / "out", hooks, resume_from=resume_from)

    first = run(4)
    resumed = run(6, resume_from=Path(first.checkpoints[-1]))
    before, after = ([h for h in result.history if h["name"] == "train_loss"] for result in (first, resumed))
    assert [h["step"] for h in after] == [5, 6]
    assert after[0]["value"] < before[0]["value"] * 0.5  # carries on from the trained weights
    assert [step for step, _ in seen] == [4, 6]  # every 4 steps, and at the end
    assert sf.info(str(seen[0][1][0].path)).samplerate == RATE


def test_delay_pattern_labels_shift_each_codebook_and_ignore_the_rest(tiny_folder):
    import torch

    from studio.models.musicgen import delayed_labels

    handle = AudioBackend().load(str(tiny_folder), "full", small_config())
    codes = torch.arange(2 * 2 * 5).reshape(2, 2, 5) % 32  # (B, K, T)
    codes[1, :, 3:] = -100                                  # a short clip: its last two frames are padding
    labels = delayed_labels(handle.module.model, codes)     # (B, T + K - 1, K)
    expected = torch.full((2, 6, 2), -100)
    expected[:, 0:5, 0] = codes[:, 0]
    expected[:, 1:6, 1] = codes[:, 1]
    assert torch.equal(labels, expected)


def test_frames_past_a_short_clip_are_left_out(tiny_folder):
    import torch

    from studio.models.musicgen import audio_codes

    handle = AudioBackend().load(str(tiny_folder), "full", small_config())
    waves = torch.randn(2, 1, 2000) * 0.3                    # 32 frames of 64 samples
    codes = audio_codes(handle.module.model, waves, torch.tensor([2000, 650]))
    assert codes.shape == (2, 2, 32)
    assert (codes[0] >= 0).all() and (codes[1, :, :11] >= 0).all() and (codes[1, :, 11:] == -100).all()


# ----------------------------------------------------------------------------- save and load

def test_lora_adapter_saves_alone_and_loads_back_into_a_fresh_handle(tiny_folder, clips, tmp_path):
    import torch

    folder = tmp_path / "adapter"
    backend, config, handle, batch = moved_and_saved(tiny_folder, clips, "lora", folder)
    assert (folder / "adapter_model.safetensors").exists() and (folder / "adapter_config.json").exists()
    assert not (folder / "model.safetensors").exists()
    size = {name: path.stat().st_size for name, path in (("adapter", folder / "adapter_model.safetensors"),
                                                         ("model", tiny_folder / "model.safetensors"))}
    assert size["adapter"] < size["model"] / 2
    marker = json.loads((folder / "studio_model.json").read_text())
    assert marker == {"modality": "audio", "base": str(tiny_folder), "method": "lora", "family": "musicgen",
                      "sample_rate": RATE}

    fresh = backend.load(str(tiny_folder), "lora", config)
    assert not torch.allclose(logits_of(fresh, batch), logits_of(handle, batch))
    backend.load_weights(fresh, folder)
    assert torch.equal(logits_of(fresh, batch), logits_of(handle, batch))
    settings = {"seconds": 0.1}
    assert np.array_equal(wav(backend.generate(fresh, ["low hum"], [3], settings, tmp_path / "a")[0]),
                          wav(backend.generate(handle, ["low hum"], [3], settings, tmp_path / "b")[0]))

    merged = backend.load(str(folder), "full", config)  # the adapter folder as a model: base + adapter merged
    assert torch.allclose(logits_of(merged, batch), logits_of(handle, batch), atol=1e-5)


def test_generate_switches_named_adapters_on_one_loaded_musicgen(tiny_folder, clips, tmp_path):
    """The Generate model cache loads the base once and adds each LoRA folder as a named PEFT adapter: every
    variant sounds as its adapter loaded alone does, and with the adapters off the base is the base."""
    from studio.generation.cache import ModelCache
    from studio.generation.variants import Variant

    backend, settings, alone = AudioBackend(), {"seconds": 0.1}, {}
    for number, scale in enumerate((0.05, 0.2)):
        handle = backend.load(str(tiny_folder), "lora", small_config())
        nudge(handle, scale)
        backend.save(handle, tmp_path / f"adapter{number}")
        alone[number] = wav(backend.generate(handle, ["low hum"], [3], settings, tmp_path / f"alone{number}")[0])
    plain = backend.load(str(tiny_folder), "full", small_config())
    alone["base"] = wav(backend.generate(plain, ["low hum"], [3], settings, tmp_path / "plain")[0])

    cache = ModelCache(2**34)
    base = Variant(ref="base", label="base", modality="audio", kind="base", base_ref=str(tiny_folder))
    for order, key in enumerate([0, "base", 1, 0]):
        variant = base if key == "base" else Variant(ref=f"1:{key}", label=f"step {key}", modality="audio",
                                                     kind="lora", base_ref=str(tiny_folder), run_id=1, step=key,
                                                     weights=str(tmp_path / f"adapter{key}"))
        handle = cache.handle_for(variant)
        [sample] = backend.generate(handle, ["low hum"], [3], settings, tmp_path / f"cached{order}")
        assert np.array_equal(wav(sample), alone[key]), key
    assert (cache.loads, cache.adapter_loads) == (1, 2)
    assert not np.array_equal(alone[0], alone[1]) and not np.array_equal(alone[0], alone["base"])


def test_full_model_folder_is_a_model_reference(tiny_folder, clips, tmp_path):
    import torch

    folder = tmp_path / "full"
    backend, config, handle, batch = moved_and_saved(tiny_folder, clips, "full", folder)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json",
                 "generation_config.json", "studio_model.json"):
        assert (folder / name).exists(), name
    assert not list(folder.glob("*.bin"))

    again = backend.load(str(folder), "full", config)
    assert again.parts["family"] == "musicgen"
    assert torch.equal(logits_of(again, batch), logits_of(handle, batch))
    resumed = backend.load(str(tiny_folder), "full", config)  # what resume and the Generate tab do
    parameter = next(p for p in resumed.trainable_parameters())
    backend.load_weights(resumed, folder)
    assert parameter is next(p for p in resumed.trainable_parameters())  # in place: an optimizer stays valid
    assert torch.equal(logits_of(resumed, batch), logits_of(handle, batch))


# ----------------------------------------------------------------------------- generation

def test_generate_writes_seeded_wav_files_at_the_model_rate(tiny_folder, tmp_path):
    backend = AudioBackend()
    handle = backend.load(str(tiny_folder), "lora", small_config())
    first, other = backend.generate(handle, ["low hum", "high beep"], [0, 1], {"seconds": 0.2}, tmp_path / "one")
    again = backend.generate(handle, ["low hum"], [0], {"seconds": 0.2}, tmp_path / "two")[0]
    alone = backend.generate(handle, ["high beep"], [1], {"seconds": 0.2}, tmp_path / "three")[0]
    for sample in (first, other, again):
        info = sf.info(str(sample.path))
        assert sample.path.suffix == ".wav" and info.samplerate == RATE and info.subtype == "PCM_16"
        assert info.frames == int(0.2 * RATE) and info.channels == 1
    assert (first.prompt, first.seed, other.prompt, other.seed) == ("low hum", 0, "high beep", 1)
    assert np.array_equal(wav(first), wav(again))      # same seed, same clip
    assert np.array_equal(wav(other), wav(alone))      # whatever else was in the batch
    assert not np.array_equal(wav(first), wav(backend.generate(handle, ["low hum"], [5], {"seconds": 0.2},
                                                                tmp_path / "four")[0]))
    default = backend.generate(handle, ["a"], [0], {}, tmp_path / "five")[0]  # the training clip length
    assert sf.info(str(default.path)).frames == int(CLIP * RATE)
    greedy = [wav(backend.generate(handle, ["a"], [seed], {"temperature": 0, "seconds": 0.1}, tmp_path / f"g{seed}")[0])
              for seed in (0, 1)]
    assert np.array_equal(*greedy)  # no sampling: the seed does not matter
    assert handle.module.training  # generation leaves the mode as it found it


# ----------------------------------------------------------------------------- what is refused

@pytest.fixture
def recorded_calls(monkeypatch):
    """Every from_pretrained call's keyword arguments."""
    import transformers

    calls: list[tuple[str, dict]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoFeatureExtractor,
                transformers.MusicgenForConditionalGeneration):
        original = cls.from_pretrained

        def spy(*args, _original=original, _label=cls.__name__, **kwargs):
            calls.append((_label, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


@pytest.mark.parametrize("method", ["lora", "full", "scratch"])
def test_never_trusts_remote_code_and_loads_safetensors_only(tiny_folder, recorded_calls, method):
    AudioBackend().load(str(tiny_folder), method, small_config())
    labels = {label for label, _ in recorded_calls}
    assert {"AutoTokenizer", "MusicgenForConditionalGeneration"} <= labels
    assert all(kwargs.get("trust_remote_code") is False for _, kwargs in recorded_calls)
    assert all(kwargs.get("use_safetensors") is True for label, kwargs in recorded_calls
               if label == "MusicgenForConditionalGeneration")


def test_a_folder_with_pickled_weights_only_is_refused(tiny_folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_folder, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as refused:
        AudioBackend().load(str(folder), "full", small_config())
    assert str(folder) in str(refused.value) and "safetensors" in str(refused.value)


def test_other_audio_models_are_refused_with_what_is_supported(tmp_path):
    folder = tmp_path / "audioldm-like"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clap"}))
    with pytest.raises(NotImplementedError) as refused:
        AudioBackend().load(str(folder), "lora", small_config())
    message = str(refused.value)
    assert "MusicGen" in message and "starter-audio" in message and str(folder) in message
