"""MelVoice (bridge.sinks.voice: a model's mel dB -> streaming audio), its measuring tools
(bridge.sinks.voice_measure) and SoundOut (bridge.sinks.sound: PyAudio playback), with real
components: real recordings' mels, the real PortAudio -> ALSA -> PulseAudio path into a null
sink, recorded back from its monitor with parec."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bridge
from bridge.analysis import AnalysisConfig
from bridge.analysis.spectral import hz_to_mel, mel_to_hz
from bridge.errors import BridgeError, DeviceError, InputMismatch
from bridge.generators.base import Generator
from bridge.sinks import SinkSpec, build_sink, parse_sink_spec
from bridge.sinks.mel_inverse import mel_band_centres_hz
from bridge.sinks.sound import SoundOut, find_output_device
from bridge.sinks.voice import MelVoice, VoiceConfig
from bridge.sinks.voice_measure import join_metric, measure_voice, mel_windows
from bridge.sources.line_in import find_device, portaudio
from bridge.sources.decode import decode_audio

ANALYSIS = AnalysisConfig()
DEMO = Path(bridge.__file__).parent / "data" / "demo.ogg"
TICK = 1_600  # samples per engine tick at 48 kHz and 30 fps


def tone_mel(freq_hz: float, amplitude: float = 0.3) -> np.ndarray:
    """The (128, 9) dB mel the analysis makes of a steady tone."""
    t = np.arange(ANALYSIS.sample_rate) / ANALYSIS.sample_rate
    tone = (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return mel_windows(tone, ANALYSIS, fps=30.0, seconds=0.5)[-1]


def play(voice: MelVoice, mels, n: int = TICK) -> np.ndarray:
    return np.concatenate([voice.render(m, n) for m in mels])


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n=4 * len(audio)))
    return float(np.argmax(spectrum)) * rate / (4 * len(audio))


def band_spacing_hz(freq_hz: float, config: VoiceConfig) -> float:
    """Distance between the two mel band centres around `freq_hz` where the voice sounds them."""
    centres = mel_band_centres_hz(config)
    k = int(np.clip(np.searchsorted(centres, freq_hz), 1, len(centres) - 1))
    return float(centres[k] - centres[k - 1])


@pytest.fixture(scope="module")
def demo_mels():
    samples = decode_audio(str(DEMO), ANALYSIS.sample_rate)
    return mel_windows(samples, ANALYSIS, fps=30.0, seconds=3.0)


# --- MelVoice ------------------------------------------------------------------------------
def test_each_call_returns_exactly_n_finite_samples_within_range(demo_mels):
    threads = torch.get_num_threads()
    voice = MelVoice()
    sizes = [0, 1, 7, 511, 1_470, 1_600, 1_601, 2_048, 4_000, 12_000, 0, 1_600, 1_535]
    for i, n in enumerate(sizes):
        mel = demo_mels[10 + i] + (60.0 if i % 3 == 0 else 0.0)  # some far too loud: the limiter
        out = voice.render(mel, n)
        assert out.shape == (n,) and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert np.abs(out).max(initial=0.0) <= 1.0
    assert voice.position == sum(sizes)
    assert torch.get_num_threads() == threads  # the voice's one-thread mode is given back


def test_loud_mels_sound_and_minus_100_db_is_silent(demo_mels):
    silent = np.full((128, 9), -100.0, np.float32)
    assert not play(MelVoice(), [silent] * 5).any()  # exact zeros, not hiss

    voice = MelVoice()
    loud = play(voice, demo_mels[:30])
    assert np.sqrt(np.mean(loud[TICK:] ** 2)) > 0.02
    going = voice.render(silent, TICK)  # the pending tail fades out in the cross-fade
    after = play(voice, [silent] * 5)
    assert not after.any()
    # No click: the fade is no steeper than the music itself was.
    assert np.abs(np.diff(going)).max() <= np.abs(np.diff(loud)).max()


def test_nan_and_inf_mels_are_silence_and_never_reach_the_output(demo_mels):
    for bad in (np.nan, np.inf, -np.inf):
        assert not play(MelVoice(), [np.full((128, 9), bad, np.float32)] * 3).any()
    mel = demo_mels[20].copy()
    mel[::7, ::2] = np.nan
    mel[3, 4] = np.inf
    out = play(MelVoice(), [mel] * 10)
    assert np.isfinite(out).all() and np.sqrt(np.mean(out ** 2)) > 0.01


@pytest.mark.parametrize("freq_hz, mel_scale", [(440.0, "analysis"), (3_000.0, "analysis"),
                                                (1_000.0, "seed")])
def test_a_steady_tone_comes_back_at_its_frequency(freq_hz, mel_scale):
    config = VoiceConfig(mel_scale=mel_scale)
    voice = MelVoice(config)
    audio = play(voice, [tone_mel(freq_hz)] * 45)[8 * TICK:]  # 1.2 s, after the start
    expected = freq_hz
    if mel_scale == "seed":  # the seed's 48 kHz filterbank sounds every mel 2 % higher
        expected = float(mel_to_hz(hz_to_mel(freq_hz) * hz_to_mel(24_000) / hz_to_mel(22_050)))
        assert expected > freq_hz + 15
    found = dominant_hz(audio, voice.out_rate)
    assert abs(found - expected) <= band_spacing_hz(expected, config), (found, expected)
    assert 0.05 < np.sqrt(np.mean(audio ** 2)) < 0.5  # near the tone's 0.21 RMS


def test_continued_phase_joins_more_cleanly_than_random_phase(demo_mels):
    metric = {}
    for phase in ("continue", "random"):
        voice = MelVoice(VoiceConfig(phase=phase))
        metric[phase] = join_metric(play(voice, demo_mels), voice.joins)
    cont, rand = metric["continue"], metric["random"]
    assert cont["joins"] == rand["joins"] > 50
    # Unrelated phases partly cancel in each cross-fade: the joins dip, measurably.
    assert rand["level_dip_db"] < -1.5
    assert abs(cont["level_dip_db"]) < abs(rand["level_dip_db"]) / 2
    assert abs(cont["highpass_dip_db"]) < abs(rand["highpass_dip_db"])


def test_bad_mel_or_sample_count_is_an_input_mismatch():
    voice = MelVoice()
    for mel in (np.zeros((64, 9)), np.zeros(128), np.zeros((128, 0))):
        with pytest.raises(InputMismatch, match="mel_db"):
            voice.render(mel, TICK)
    with pytest.raises(InputMismatch, match="n_samples"):
        voice.render(np.zeros((128, 9)), -1)


def test_voice_config_refuses_bad_settings():
    for bad in ({"phase": "sideways"}, {"inverse": "magic"}, {"mel_scale": "bark"},
                {"hop": 2_048}, {"block_samples": 512}, {"momentum": 1.0}, {"ceiling": 1.5}):
        with pytest.raises(ValueError):
            VoiceConfig(**bad)


def test_for_model_takes_the_models_mel_settings():
    model = Generator(SimpleNamespace(analysis={"n_mels": 64, "hop": 256}))
    voice = MelVoice.for_model(model)
    assert (voice.out_rate, voice.config.n_mels, voice.config.hop) == (48_000, 64, 256)
    assert MelVoice.for_model(model, out_rate=44_100).out_rate == 44_100
    assert voice.render(np.full((64, 9), 10.0, np.float32), 1_000).shape == (1_000,)


def test_measure_voice_reports_speed_and_joins():
    report = measure_voice(seconds=1.0, path=str(DEMO))
    for key in ("rtf_median", "rtf_overall", "rtf_cpu", "ms_per_call_median", "ms_per_call_p95"):
        assert report[key] > 0
    assert report["calls"] == 30 and report["join"]["joins"] > 10
    assert report["config"]["phase"] == "continue"
    assert 0 < report["peak"] <= 1.0


# --- SoundOut ------------------------------------------------------------------------------
def test_sound_spec_builds_a_sound_out_at_the_voices_rate():
    assert parse_sink_spec("sound") == SinkSpec("sound")
    assert parse_sink_spec("Sound:USB Audio") == SinkSpec("sound", "USB Audio")
    sink = build_sink("sound:pulse", audio_rate=48_000)
    assert isinstance(sink, SoundOut)  # not threaded: send only copies into a ring
    assert (sink.device, sink.rate) == ("pulse", 48_000)
    assert build_sink("sound").device is None
    assert SoundOut().rate == MelVoice().out_rate  # no rate given: the voice's default


def test_output_lookup_shares_line_ins_rules(pulse_null_sink):
    pa = portaudio()
    try:
        default = find_output_device(pa, None)
        assert default["max_output_channels"] > 0
        # A blank name is the default output, as "default" is; an index or a name finds itself.
        for same in ("", "  ", "default", " Default ", default["index"], str(default["index"]),
                     default["name"]):
            assert find_output_device(pa, same)["index"] == default["index"], same
        assert find_device(pa, "default", "output") == default
        assert find_device(pa, "default", "input")["max_input_channels"] > 0
        with pytest.raises(ValueError, match="direction"):
            find_device(pa, None, "sideways")
    finally:
        pa.terminate()


def test_unknown_output_device_is_a_device_error_naming_it(pulse_null_sink):
    with pytest.raises(DeviceError) as info:
        SoundOut("no such card xyz").open(2, 2, 30)
    message = str(info.value)
    assert "no such card xyz" in message and "outputs:" in message and "\n" not in message
    assert isinstance(info.value, BridgeError) and isinstance(info.value, OSError)
    with pytest.raises(DeviceError):
        SoundOut(987).open(2, 2, 30)


def test_generated_sound_plays_into_a_null_sink(pulse_null_sink, tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_SINK", pulse_null_sink.name)  # our stream goes to the null sink
    voice = MelVoice()
    mel = tone_mel(1_000.0)
    recording = tmp_path / "monitor.f32"
    with open(recording, "wb") as file:
        recorder = subprocess.Popen(["parec", "-d", pulse_null_sink.monitor, "--raw",
                                     "--format=float32le", "--rate=48000", "--channels=1"],
                                    stdout=file, stderr=subprocess.DEVNULL)
        try:
            frame = np.zeros((2, 2, 4), np.uint8)
            with SoundOut("pulse", rate=voice.out_rate) as out:
                out.open(2, 2, 30.0)
                # In real time, until a second and a half has played (ALSA -> Pulse takes a
                # second or more to start; longer on a busy machine).
                started = time.monotonic()
                tick = 0
                while out.played_samples < 1.5 * voice.out_rate and tick < 30 * 20:
                    out.send(frame, time.monotonic(), audio=voice.render(mel, TICK))
                    tick += 1
                    time.sleep(max(0.0, started + tick / 30.0 - time.monotonic()))
                assert out.played_samples >= 1.5 * voice.out_rate, out.status
                time.sleep(0.4)  # nothing more sent: the ring runs dry and fades out
                assert out.underflows >= 1
        finally:
            recorder.terminate()
            recorder.wait(5)
    audio = np.fromfile(recording, dtype=np.float32)
    assert len(audio) > 48_000
    # The loudest second is the tone we synthesised.
    window = 48_000
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(4_800), mode="valid")[::4_800]
    start = int(np.argmax(energy)) * 4_800
    loudest = audio[max(0, start - window // 2):][:window]
    assert np.sqrt(np.mean(loudest ** 2)) > 0.05
    assert abs(dominant_hz(loudest, 48_000) - 1_000.0) <= band_spacing_hz(1_000.0, voice.config)
    # No click anywhere, the underflow at the end included: no step larger than a 1 kHz wave's.
    steepest_tone_step = 2 * np.pi * 1_000.0 / 48_000 * np.abs(audio).max()
    assert np.abs(np.diff(audio)).max() <= 2.0 * steepest_tone_step


def test_overflow_drops_the_oldest_and_bounds_the_delay(pulse_null_sink, monkeypatch):
    monkeypatch.setenv("PULSE_SINK", pulse_null_sink.name)
    with SoundOut("pulse", rate=48_000, target_latency_s=0.1) as out:
        out.open(2, 2, 30.0)
        for _ in range(3):  # 1.5 s at once, far faster than it can play
            out.write(np.full(24_000, 0.1, np.float32))
            assert out.buffered_s <= 0.1 + 1e-9
        assert out.overflows >= 1 and out.dropped_samples > 48_000
