"""Text-to-speech, the v1.1 extension (docs/control-api.md "TTS"): which engine speaks `tts_text`,
with which voices, and the file path the switch plays it from.

`BRIDGE_TTS=off` (the default) keeps v1: `tts_text` is 422 tts_not_supported. `flite` speaks with
FreeSWITCH's mod_flite, `espeak` with espeak-ng through mod_tts_commandline (freeswitch-conf/
tts_commandline.conf.xml). Either way the speech is played as a file, mod_ssml's
`tts://<module>|<voice>|<text>`, so it goes through switch_ivr_play_file like an audio_url does:
the same PLAYBACK_START/STOP with `playback_id`, the same uuid_break, the same conference play.

The text is free text, so it goes through `commands.speech_text` (its own alphabet and
normalisation) and travels in a command split on a delimiter it cannot hold
(`commands.delimited_command`); the voice reaches the switch too, so it must be on the engine's
allow-list below.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.calls.commands import Arg, speech_text, word
from bridge.errors import ApiError

TTS_MODES = ("off", "flite", "espeak")


@dataclass(frozen=True, slots=True)
class Engine:
    module: str  # the speech interface's name on the switch
    default_voice: str
    voices: frozenset[str]


# mod_flite 1.10.12 knows these five (flite_speech_open); kal is 8 kHz, the others 16 kHz.
FLITE_VOICES = frozenset({"kal", "kal16", "slt", "rms", "awb"})
# The language column of `espeak-ng --voices` (Debian's espeak-ng 1.51): the voice is passed to
# espeak-ng's -v, shell-quoted by mod_tts_commandline, and must be one of these words.
ESPEAK_VOICES = frozenset(
    """af am an ar as az ba be bg bn bpy bs ca cmn cmn-latn-pinyin cs cv cy da de el en-029 en-gb
    en-gb-scotland en-gb-x-gbclan en-gb-x-gbcwmd en-gb-x-rp en-us en-us-nyc eo es es-419 et eu fa
    fa-latn fi fr-be fr-ch fr-fr ga gd gn grc gu hak haw he hi hr ht hu hy hyw ia id io is it ja jbo
    ka kk kl kn ko kok ku ky la lb lfn lt ltg lv mi mk ml mr ms mt my nb nci ne nl nog om or pa pap
    piqd pl pt pt-br py qdb qu quc qya ro ru ru-lv sd shn si sjn sk sl smj sq sr sv sw ta te th tk tn
    tr tt ug uk ur uz vi vi-vn-x-central vi-vn-x-south yue""".split()
)

ENGINES = {
    "flite": Engine("flite", "kal", FLITE_VOICES),
    "espeak": Engine("tts_commandline", "en-us", ESPEAK_VOICES),
}


def check_settings(mode: str, voice: str) -> None:
    """BRIDGE_TTS and BRIDGE_TTS_VOICE, checked once at startup."""
    if mode not in TTS_MODES:
        raise ValueError(f"BRIDGE_TTS must be one of {', '.join(TTS_MODES)}, got {mode!r}")
    if voice and mode == "off":
        return  # a voice kept for later does no harm while TTS is off
    if voice and voice not in ENGINES[mode].voices:
        known = ", ".join(sorted(ENGINES[mode].voices)[:8])
        raise ValueError(f"BRIDGE_TTS_VOICE {voice!r} is not a {mode} voice ({known}, …)")


def field_error(field: str, message: str) -> ApiError:
    """400 validation_error shaped like pydantic's, so clients read one envelope."""
    return ApiError(
        400,
        "validation_error",
        f"{field}: {message}",
        extra={"errors": [{"loc": [field], "msg": message, "type": "value_error"}]},
    )


def not_supported() -> ApiError:
    return ApiError(
        422,
        "tts_not_supported",
        "TTS is not enabled on this bridge (BRIDGE_TTS=off): send audio_url with a pre-rendered WAV or MP3",
    )


def speech_source(mode: str, default_voice: str, text: str, voice: str | None) -> Arg:
    """`tts://<module>|<voice>|<text>` for the configured engine, or an ApiError (422 when TTS is
    off, 400 validation_error naming tts_text or voice)."""
    engine = ENGINES.get(mode)
    if engine is None:
        raise not_supported()
    chosen = voice if voice is not None else (default_voice or engine.default_voice)
    if chosen not in engine.voices:
        names = ", ".join(sorted(engine.voices)) if len(engine.voices) < 10 else "see docs/control-api.md"
        raise field_error("voice", f"{chosen!r} is not a {mode} voice ({names})")
    try:
        spoken = speech_text(text, "tts_text")
    except ApiError as exc:  # UnsafeValue
        raise field_error("tts_text", getattr(exc, "reason", exc.message)) from exc
    return Arg(f"tts://{word(engine.module)}|{word(chosen, 'voice')}|{spoken}")
