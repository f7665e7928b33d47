"""Audio side of the data pipeline: reading (formats, captions, bad files) and every audio cleaning
step, each checked for what it removes or changes AND for what it must leave alone."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from media_factory import (audio_item, digest, errors_by_file, flac_without_length, manifest, noise, read_audio,
                           rms_db, run_step, silence, sources, tone, truncate, write, write_audio)
from studio.data.archive import StagedFile
from studio.data.clean import default_config
from studio.data.read_media import inspect_audio, read_media_files
from studio.data.read_text import BadFile
from studio.data.service import import_dataset
from studio.settings import load_settings

RATE = 16_000






def loudness(path) -> float:
    import pyloudnorm

    data, rate = read_audio(path)
    return pyloudnorm.Meter(rate).integrated_loudness(data)


# --------------------------------------------------------------------------------------- silent


def test_silent_removes_digital_silence_and_very_quiet_noise_but_keeps_a_quiet_tone(tmp_path, scratch):
    paths = {
        "zeros.wav": write_audio(tmp_path / "zeros.wav", silence(1.0), RATE),
        "hiss.wav": write_audio(tmp_path / "hiss.wav", noise(1.0, RATE, rms_dbfs=-70), RATE, subtype="FLOAT"),
        "quiet_tone.wav": write_audio(tmp_path / "quiet_tone.wav", tone(440, 1.0, RATE, rms_dbfs=-30), RATE),
        "speech_level.flac": write_audio(tmp_path / "speech_level.flac", tone(220, 1.0, RATE, rms_dbfs=-20,
                                                                              harmonics=5), RATE),
    }
    assert -71 < rms_db(read_audio(paths["hiss.wav"])[0]) < -69
    outcome = run_step("silent", [audio_item(p) for p in paths.values()], "audio", scratch)
    assert sources(outcome.removed) == ["zeros.wav", "hiss.wav"]
    assert sources(outcome.kept) == ["quiet_tone.wav", "speech_level.flac"]
    reasons = dict((i.source, r) for i, r in outcome.removed)
    assert reasons["hiss.wav"] == "silent: RMS -70 dBFS (threshold -60)"


def test_silent_threshold_is_a_parameter(tmp_path, scratch):
    hiss = write_audio(tmp_path / "hiss.wav", noise(1.0, RATE, rms_dbfs=-70), RATE, subtype="FLOAT")
    quiet = write_audio(tmp_path / "quiet.wav", tone(440, 1.0, RATE, rms_dbfs=-30), RATE)
    assert sources(run_step("silent", [audio_item(hiss)], "audio", scratch, threshold_db=-80).kept) == ["hiss.wav"]
    assert sources(run_step("silent", [audio_item(quiet)], "audio", scratch, threshold_db=-25).removed) == ["quiet.wav"]


# -------------------------------------------------------------------------------- trim silence


def test_trim_silence_cuts_quiet_starts_and_ends(tmp_path, scratch):
    padded = np.concatenate([silence(0.5), tone(440, 1.0, RATE, rms_dbfs=-20), silence(0.7)])
    path = write_audio(tmp_path / "padded.wav", padded, RATE)
    before = digest(path)
    item = audio_item(path)
    assert item.meta["duration"] == pytest.approx(2.2)

    outcome = run_step("trim_silence", [item], "audio", scratch)
    assert sources(outcome.kept) == ["padded.wav"]
    assert [(i.source, b) for i, b, _ in outcome.changed] == [("padded.wav", "2.20s")]
    data, rate = read_audio(item.path)
    assert rate == RATE
    assert item.path != path and digest(path) == before  # a new file; the upload is untouched
    assert item.meta["duration"] == pytest.approx(len(data) / rate)
    assert 1.0 <= item.meta["duration"] <= 1.0 + 2 * 0.05 + 0.02  # the tone plus at most the padding
    assert rms_db(data) > -21  # what was kept is the tone


def test_trim_silence_also_cuts_a_low_noise_floor_but_keeps_the_padding_parameter(tmp_path, scratch):
    clip = np.concatenate([noise(0.4, RATE, rms_dbfs=-80, seed=1), tone(330, 0.8, RATE, rms_dbfs=-15),
                           noise(0.4, RATE, rms_dbfs=-80, seed=2)])
    item = audio_item(write_audio(tmp_path / "floor.flac", clip, RATE))
    run_step("trim_silence", [item], "audio", scratch, padding_ms=0)
    assert item.meta["duration"] == pytest.approx(0.8, abs=0.011)


@pytest.mark.parametrize("seconds", [1.0, 1.0037])
def test_trim_silence_leaves_a_clip_without_silence_unchanged(tmp_path, scratch, seconds):
    # 1.0037 s is not a whole number of 10 ms analysis frames: the short tail is audio, not silence
    path = write_audio(tmp_path / "busy.wav", tone(440, seconds, RATE, rms_dbfs=-20), RATE)
    items = [audio_item(path)]
    for padding in (50, 0):
        outcome = run_step("trim_silence", items, "audio", scratch, padding_ms=padding)
        assert outcome.changed == []
        assert items[0].path == path
    assert not scratch.exists() or not any(scratch.iterdir())


def test_trim_silence_leaves_all_silent_clips_alone(tmp_path, scratch):
    path = write_audio(tmp_path / "zeros.wav", silence(0.5), RATE)
    outcome = run_step("trim_silence", [audio_item(path)], "audio", scratch)
    assert outcome.changed == [] and sources(outcome.kept) == ["zeros.wav"]


# ------------------------------------------------------------------------------------- duration


def test_duration_bounds_remove_too_short_and_too_long_clips(tmp_path, scratch):
    rate = 8000
    lengths = {"blip": 0.3, "min_edge": 0.5, "normal": 2.0, "max_edge": 30.0, "lecture": 31.0}
    items = [audio_item(write_audio(tmp_path / f"{name}.flac", tone(440, s, rate, rms_dbfs=-20), rate))
             for name, s in lengths.items()]
    outcome = run_step("duration", items, "audio", scratch)
    assert sources(outcome.removed) == ["blip.flac", "lecture.flac"]
    assert sources(outcome.kept) == ["min_edge.flac", "normal.flac", "max_edge.flac"]
    reasons = dict((i.source, r) for i, r in outcome.removed)
    assert reasons["blip.flac"].startswith("too short: 0.30s") and reasons["lecture.flac"].startswith("too long: 31.0s")

    custom = run_step("duration", items, "audio", scratch, min_seconds=1.0, max_seconds=5.0)
    assert sources(custom.kept) == ["normal.flac"]


# ------------------------------------------------------------------------------------- clipping


def test_clipping_removes_a_hard_clipped_sine_and_keeps_a_loud_clean_one(tmp_path, scratch):
    t = np.arange(RATE) / RATE
    clipped = np.clip(3.0 * np.sin(2 * np.pi * 440 * t), -1.0, 1.0).astype(np.float32)
    loud = (0.95 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    barely = loud.copy()
    barely[:50] = 1.0  # 0.3 % at full scale: under the 1 % default
    paths = [write_audio(tmp_path / "clipped.wav", clipped, RATE),
             write_audio(tmp_path / "loud.wav", loud, RATE),
             write_audio(tmp_path / "barely.flac", barely, RATE)]
    outcome = run_step("clipping", [audio_item(p) for p in paths], "audio", scratch)
    assert sources(outcome.removed) == ["clipped.wav"]
    assert sources(outcome.kept) == ["loud.wav", "barely.flac"]
    assert outcome.removed[0][1].startswith("clipped: ")

    strict = run_step("clipping", [audio_item(p) for p in paths], "audio", scratch, max_fraction=0.001)
    assert sources(strict.removed) == ["clipped.wav", "barely.flac"]


# ------------------------------------------------------------------------------ exact duplicates


def test_exact_duplicates_are_the_same_samples_in_any_container(tmp_path, scratch):
    # integer samples, so WAV and FLAC hold exactly the same values (libsndfile rounds floats per format)
    clip = np.round((tone(440, 1.0, RATE, rms_dbfs=-20, harmonics=3) + noise(1.0, RATE, rms_dbfs=-40)) * 32767)
    clip = clip.astype(np.int16)
    first = write_audio(tmp_path / "first.wav", clip, RATE)
    renamed = write(tmp_path / "renamed.wav", first.read_bytes())
    as_flac = write_audio(tmp_path / "same.flac", clip, RATE)
    nudged = clip.copy()
    nudged[1000] += 1
    one_sample = write_audio(tmp_path / "one_sample_off.wav", nudged, RATE)
    other_rate = write_audio(tmp_path / "other_rate.wav", clip, 22_050)
    items = [audio_item(p) for p in (first, renamed, as_flac, one_sample, other_rate)]
    outcome = run_step("exact_duplicates", items, "audio", scratch)
    assert sources(outcome.kept) == ["first.wav", "one_sample_off.wav", "other_rate.wav"]
    assert sources(outcome.removed) == ["renamed.wav", "same.flac"]
    assert all(reason == "exact duplicate of first.wav" for _, reason in outcome.removed)


# ------------------------------------------------------------------------------- near duplicates


def test_near_duplicates_remove_the_same_tone_with_a_little_noise(tmp_path, scratch):
    base = tone(440, 2.0, RATE, rms_dbfs=-15)
    paths = [write_audio(tmp_path / "a4.wav", base, RATE),
             write_audio(tmp_path / "a4_noisy.wav", base + noise(2.0, RATE, rms_dbfs=-75, seed=3), RATE),
             write_audio(tmp_path / "a5_octave.wav", tone(880, 2.0, RATE, rms_dbfs=-15), RATE),
             write_audio(tmp_path / "e5.wav", tone(659.25, 2.0, RATE, rms_dbfs=-15), RATE)]
    outcome = run_step("near_duplicates", [audio_item(p) for p in paths], "audio", scratch)
    assert sources(outcome.kept) == ["a4.wav", "a5_octave.wav", "e5.wav"]
    assert sources(outcome.removed) == ["a4_noisy.wav"]
    reason = outcome.removed[0][1]
    assert reason.startswith("near-duplicate of a4.wav (similarity ")
    assert float(reason.rsplit(" ", 1)[1].rstrip(")")) >= 0.97


def test_near_duplicates_catch_a_resampled_rich_signal(tmp_path, scratch):
    rich = tone(196, 2.0, 44_100, rms_dbfs=-18, harmonics=8) + noise(2.0, 44_100, rms_dbfs=-45, seed=4)
    first = write_audio(tmp_path / "take.wav", rich, 44_100)
    from scipy.signal import resample_poly
    second = write_audio(tmp_path / "take_16k.flac", resample_poly(rich, 160, 441, axis=0).astype(np.float32), RATE)
    outcome = run_step("near_duplicates", [audio_item(first), audio_item(second)], "audio", scratch)
    assert sources(outcome.removed) == ["take_16k.flac"]


def test_near_duplicates_never_pair_clips_of_very_different_length(tmp_path, scratch):
    short = write_audio(tmp_path / "short.wav", tone(440, 1.0, RATE, rms_dbfs=-15), RATE)
    long = write_audio(tmp_path / "long.wav", tone(440, 3.0, RATE, rms_dbfs=-15), RATE)
    similar = write_audio(tmp_path / "similar_length.wav", tone(440, 1.05, RATE, rms_dbfs=-15), RATE)
    outcome = run_step("near_duplicates", [audio_item(p) for p in (short, long, similar)], "audio", scratch)
    assert sources(outcome.kept) == ["short.wav", "long.wav"]
    assert sources(outcome.removed) == ["similar_length.wav"]
    assert outcome.removed[0][1].startswith("near-duplicate of short.wav")


# ------------------------------------------------------------------------------------------ mono


def test_mono_mixes_stereo_down_and_leaves_mono_alone(tmp_path, scratch):
    left = tone(440, 1.0, RATE, rms_dbfs=-20)
    stereo = np.concatenate([left, 0.5 * left], axis=1)
    stereo_path = write_audio(tmp_path / "stereo.wav", stereo, RATE)
    mono_path = write_audio(tmp_path / "mono.wav", left, RATE)
    before = digest(stereo_path)
    items = [audio_item(stereo_path), audio_item(mono_path)]
    assert [i.meta["channels"] for i in items] == [2, 1]

    outcome = run_step("mono", items, "audio", scratch)
    assert [(i.source, b, a) for i, b, a in outcome.changed] == [("stereo.wav", "2 channels", "mono")]
    data, rate = read_audio(items[0].path)
    assert data.shape == (RATE, 1) and rate == RATE and items[0].meta["channels"] == 1
    np.testing.assert_allclose(data[:, 0], 0.75 * left[:, 0], atol=2e-4)  # the mean of the channels
    assert items[1].path == mono_path
    assert digest(stereo_path) == before


# -------------------------------------------------------------------------------------- resample


def test_resample_and_loudness_are_off_by_default():
    config = default_config("audio")
    assert config["resample"]["enabled"] is False and config["loudness"]["enabled"] is False
    assert config["mono"]["enabled"] is True


def test_resample_converts_to_the_target_rate(tmp_path, scratch):
    high = write_audio(tmp_path / "high.wav", tone(440, 1.5, 44_100, rms_dbfs=-20), 44_100)
    low = write_audio(tmp_path / "low.wav", tone(440, 1.0, 8_000, rms_dbfs=-20), 8_000)
    target = write_audio(tmp_path / "target.wav", tone(440, 1.0, RATE, rms_dbfs=-20), RATE)
    items = [audio_item(p) for p in (high, low, target)]
    outcome = run_step("resample", items, "audio", scratch, sample_rate=RATE)
    assert [(i.source, b, a) for i, b, a in outcome.changed] == [("high.wav", "44100 Hz", "16000 Hz"),
                                                                 ("low.wav", "8000 Hz", "16000 Hz")]
    for item, seconds in zip(items, (1.5, 1.0, 1.0)):
        data, rate = read_audio(item.path)
        assert rate == RATE == item.meta["sample_rate"]
        assert len(data) / rate == pytest.approx(seconds, abs=1e-3)
        assert rms_db(data) == pytest.approx(-20, abs=0.5)  # same signal, other rate
    assert items[2].path == target


def test_import_keeps_the_rate_unless_resample_is_on(tmp_path, stores):
    store = stores()
    folder = tmp_path / "rates"
    write_audio(folder / "a.wav", tone(300, 1.0, 22_050, rms_dbfs=-20, harmonics=4), 22_050)
    write(folder / "a.txt", "a tone")
    kept = import_dataset(store, [folder], name="rates", split="1,0,0")
    assert [r["sample_rate"] for r in manifest(store, kept)] == [22_050]
    resampled = import_dataset(store, [folder], name="rates", split="1,0,0",
                               steps={"resample": {"enabled": True, "sample_rate": 16_000}})
    row = manifest(store, resampled)[0]
    assert row["sample_rate"] == 16_000
    assert sf.info(f"{resampled['path']}/{row['file']}").samplerate == 16_000


# -------------------------------------------------------------------------------------- loudness


@pytest.mark.parametrize("target", [-23.0, -16.0])
def test_loudness_brings_quiet_and_loud_clips_to_the_target(tmp_path, scratch, target):
    clips = {"quiet.wav": tone(440, 3.0, RATE, rms_dbfs=-40, harmonics=3),
             "loud.wav": tone(220, 3.0, RATE, rms_dbfs=-9, harmonics=3),
             "voice_like.flac": tone(150, 2.0, RATE, rms_dbfs=-28, harmonics=10) + noise(2.0, RATE, -50)}
    items = [audio_item(write_audio(tmp_path / name, data, RATE)) for name, data in clips.items()]
    measured_before = [loudness(i.path) for i in items]
    assert all(abs(m - target) > 3 for m in measured_before)
    outcome = run_step("loudness", items, "audio", scratch, target_lufs=target)
    assert len(outcome.changed) == 3
    for item in items:
        assert item.path.parent == scratch
        assert loudness(item.path) == pytest.approx(target, abs=1.0)
        assert np.abs(read_audio(item.path)[0]).max() < 1.0


def test_loudness_leaves_clips_too_short_to_measure_or_already_on_target(tmp_path, scratch):
    blip = write_audio(tmp_path / "blip.wav", tone(440, 0.3, RATE, rms_dbfs=-40), RATE)
    on_target = tone(440, 2.0, RATE, rms_dbfs=-20)
    import pyloudnorm
    gain = 10 ** ((-23 - pyloudnorm.Meter(RATE).integrated_loudness(on_target)) / 20)
    on = write_audio(tmp_path / "on_target.wav", on_target * gain, RATE, subtype="FLOAT")
    items = [audio_item(blip), audio_item(on)]
    assert run_step("loudness", items, "audio", scratch).changed == []
    assert [i.path for i in items] == [blip, on]


def test_loudness_never_clips_to_reach_the_target(tmp_path, scratch):
    # a sparse click track: low integrated loudness but a full-scale peak already
    clicks = np.zeros((3 * RATE, 1), dtype=np.float32)
    clicks[:: RATE // 2] = 0.9
    item = audio_item(write_audio(tmp_path / "clicks.wav", clicks, RATE, subtype="FLOAT"))
    run_step("loudness", [item], "audio", scratch, target_lufs=-5.0)
    assert np.abs(read_audio(item.path)[0]).max() <= 0.99 + 1e-4


# ------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt, ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")])
def test_wav_flac_and_ogg_are_read(tmp_path, fmt, ext):
    path = write_audio(tmp_path / f"clip.{ext}", tone(440, 1.25, 22_050, rms_dbfs=-20, channels=2), 22_050,
                       format=fmt)
    meta = inspect_audio(path, 600)
    assert meta["format"] == fmt
    assert meta["sample_rate"] == 22_050 and meta["channels"] == 2
    assert meta["duration"] == pytest.approx(1.25, abs=0.01)


def test_a_clip_over_the_length_limit_is_refused_from_its_header_and_the_rest_imports(tmp_path, stores):
    store = stores(max_audio_seconds=2)
    folder = tmp_path / "clips"
    write_audio(folder / "short.wav", tone(330, 1.5, RATE, -20), RATE)
    write_audio(folder / "long.flac", tone(330, 3.0, RATE, -20), RATE)
    result = import_dataset(store, [folder], steps={"missing_captions": {"action": "fill"}}, split="1,0,0")
    assert [r["source"] for r in manifest(store, result)] == ["clips/short.wav"]
    assert errors_by_file(result) == {"clips/long.flac": "too long: 3 s (limit 2 s, STUDIO_MAX_AUDIO_SECONDS)"}


def test_a_flac_without_a_length_in_its_header_is_refused_naming_the_cause_before_decoding(tmp_path):
    # a streaming encoder leaves the total unknown: libsndfile then says 2**63 - 1 frames (sizing a buffer by
    # that failed as "unable to allocate"), and soundfile cannot read such a file to its end
    unknown = flac_without_length(write_audio(tmp_path / "known.flac", tone(440, 1.5, RATE, -20), RATE),
                                  tmp_path / "unknown.flac")
    assert sf.info(str(unknown)).frames == 2**63 - 1
    with pytest.raises(BadFile, match=r"^the header gives no length \(a FLAC written as a stream\?\): re-encode"):
        inspect_audio(unknown, 600)


def test_audio_import_of_several_formats_with_default_cleaning(tmp_path, stores):
    store = stores()
    folder = tmp_path / "voices"
    padded = np.concatenate([silence(0.6, 44_100, 2), tone(200, 1.0, 44_100, -20, channels=2, harmonics=6),
                             silence(0.6, 44_100, 2)])
    write_audio(folder / "padded_stereo.wav", padded, 44_100)
    write_audio(folder / "b.flac", tone(300, 1.0, RATE, -20, harmonics=3), RATE)
    write_audio(folder / "c.ogg", tone(500, 1.5, RATE, -20, harmonics=2), RATE, format="OGG")
    write_audio(folder / "d_silent.wav", silence(1.0), RATE)
    write(folder / "metadata.csv", "file_name,transcription\npadded_stereo.wav,hello\nb.flac,two\nc.ogg,three\n"
                                   "d_silent.wav,nothing\n")
    result = import_dataset(store, [folder], split="1,0,0")
    assert result["modality"] == "audio"
    assert (result["items_in"], result["items_kept"]) == (4, 3)
    assert result["removed"]["silent"] == 1
    rows = {r["source"]: r for r in manifest(store, result)}
    assert {s: r["caption"] for s, r in rows.items()} == {"voices/padded_stereo.wav": "hello",
                                                          "voices/b.flac": "two", "voices/c.ogg": "three"}
    padded_row = rows["voices/padded_stereo.wav"]
    assert padded_row["duration"] < 1.2  # trimmed
    assert sf.info(f"{result['path']}/{padded_row['file']}").channels == 1  # mixed to mono


# ------------------------------------------------------------------------------------ bad audio


def test_corrupt_truncated_and_empty_audio_are_reported_by_name(tmp_path, stores):
    store = stores()
    folder = tmp_path / "clips"
    write_audio(folder / "good.wav", tone(330, 1.0, RATE, -20), RATE)
    truncate(write_audio(folder / "cut.wav", tone(440, 2.0, RATE, -20), RATE), 0.5)
    truncate(write_audio(folder / "cut.flac", tone(440, 2.0, RATE, -20), RATE), 0.5)
    truncate(write_audio(folder / "cut.ogg", tone(440, 2.0, RATE, -20), RATE, format="OGG"), 0.3)
    write(folder / "empty.flac", b"")
    write(folder / "text.wav", "RIFF? no, just words in a file named .wav\n")
    write(folder / "header_only.wav", write_audio(tmp_path / "h.wav", tone(440, 1.0, RATE), RATE).read_bytes()[:20])
    result = import_dataset(store, [folder], steps={"missing_captions": {"action": "fill"}}, split="1,0,0")
    assert [r["source"] for r in manifest(store, result)] == ["clips/good.wav"]
    errors = errors_by_file(result)
    assert set(errors) == {"clips/cut.wav", "clips/cut.flac", "clips/cut.ogg", "clips/empty.flac", "clips/text.wav",
                           "clips/header_only.wav"}
    assert errors["clips/empty.flac"] == "empty file (0 bytes)"
    assert "truncated" in errors["clips/cut.wav"]
    for name in ("clips/cut.flac", "clips/cut.ogg", "clips/header_only.wav"):
        assert errors[name].startswith(("unreadable audio", "audio has no samples")), errors[name]
    assert errors["clips/text.wav"] == "text.wav is a text file, not audio"


def test_a_wav_with_a_streaming_header_is_not_called_truncated(tmp_path):
    # recorders that cannot seek back write 0xFFFFFFFF as the data size: that is not truncation
    path = write_audio(tmp_path / "stream.wav", tone(440, 1.0, RATE, -20), RATE)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data") + 4
    raw[at:at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    assert inspect_audio(path, 600)["duration"] == pytest.approx(1.0)


def test_a_complete_wav_with_extra_chunks_is_not_called_truncated(tmp_path):
    # a LIST chunk after the samples (and an odd-sized chunk before them, with its pad byte)
    path = write_audio(tmp_path / "tagged.wav", tone(440, 1.0, RATE, -20), RATE)
    raw = path.read_bytes()
    data_at = raw.index(b"data")
    odd = b"junk" + (3).to_bytes(4, "little") + b"abc\x00"
    tail = b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    body = raw[12:data_at] + odd + raw[data_at:] + tail
    path.write_bytes(b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WAVE" + body)
    assert inspect_audio(path, 600)["duration"] == pytest.approx(1.0)
    with pytest.raises(BadFile, match="truncated"):
        inspect_audio(truncate(path, 0.6), 600)


def test_unsupported_audio_files_are_reported(tmp_path):
    write_audio(tmp_path / "a.wav", tone(440, 1.0, RATE, -20), RATE)
    write_audio(tmp_path / "b.aiff", tone(440, 1.0, RATE, -20), RATE, format="AIFF")
    result = read_media_files([StagedFile("a.wav", tmp_path / "a.wav"), StagedFile("b.aiff", tmp_path / "b.aiff")],
                              "audio", load_settings())
    assert [i.source for i in result.items] == ["a.wav"]
    assert [p.file for p in result.problems] == ["b.aiff"]
    assert "not a supported audio file" in result.problems[0].reason

