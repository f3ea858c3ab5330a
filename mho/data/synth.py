"""Speech synthesis with the Debian TTS engines: espeak-ng, flite and festival.

Each engine writes a WAV at its own rate; a converter turns it into 16 kHz mono 16-bit FLAC
(optionally pitch-shifted, for engines without a pitch control): ``sox`` (the default) or
``python`` (soundfile + scipy's polyphase resampler, for machines without sox, e.g. a GPU
box that carries only the engines). The python converter shifts pitch by asking the engine
for audio ``f`` times longer and then resampling it ``f`` times faster, which raises pitch
and formants by ``f`` and restores the duration, as sox's ``pitch`` effect does. Output
is written under a temporary name and renamed, so an interrupted build never leaves a
truncated file that a resumed build would take for a finished one.

festival takes ~0.2-0.3 s to start, so it synthesizes a whole batch of utterances from
one generated Scheme script; espeak-ng and flite start in milliseconds and run once per
utterance.
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile

from mho.data.audio import SAMPLE_RATE
from mho.errors import MhoError

ESPEAK = "espeak-ng"
FLITE = "flite"
FESTIVAL = "festival"
ENGINES = (ESPEAK, FLITE, FESTIVAL)
SOX = "sox"

# Executable -> Debian package that provides it.
PACKAGES = {ESPEAK: "espeak-ng", FLITE: "flite", FESTIVAL: "festival", SOX: "sox"}
# festival voice function -> (voice directory under FESTIVAL_VOICES, Debian package).
FESTIVAL_VOICE_PACKAGES = {
    "voice_kal_diphone": ("english/kal_diphone", "festvox-kallpc16k"),
    "voice_ked_diphone": ("english/ked_diphone", "festvox-kdlpc16k"),
    "voice_cmu_us_slt_arctic_hts": ("us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
}
# Where festival's voices live; MHO_FESTIVAL_VOICES points elsewhere for a festival unpacked
# from its .deb files (with ``--libdir`` given by a wrapper script).
FESTIVAL_VOICES = Path(os.environ.get("MHO_FESTIVAL_VOICES", "/usr/share/festival/voices"))
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt", "awb_time")  # built into Debian's flite
CONVERTERS = ("sox", "python")
PYTHON_SHIFT_RATE_STEP = 50  # Hz: the shifted source rate is rounded so resampling stays cheap

ESPEAK_WORDS_PER_MINUTE = 175  # espeak-ng's default rate; Voice.speed scales it
MIN_SECONDS_PER_WORD = 0.05  # shorter output means the engine failed silently
SUBPROCESS_TIMEOUT = 600.0  # seconds; a festival batch of ~100 utterances takes ~10 s


@dataclass(frozen=True)
class Voice:
    """One engine voice with its prosody settings."""

    engine: str  # one of ENGINES
    name: str  # engine voice: "en-us+m3" (espeak-ng), "kal16" (flite), "voice_kal_diphone"
    speed: float = 1.0  # tempo factor: 1.2 speaks 20% faster than the voice's default
    pitch: int | None = None  # espeak-ng base pitch 0-99 (None: the voice's own, 50)
    shift_cents: int = 0  # sox pitch shift after synthesis, for flite and festival

    def label(self) -> str:
        """A compact description, e.g. ``espeak-ng:en-us+m3:s1.10:p42``."""
        parts = [self.engine, self.name, f"s{self.speed:.2f}"]
        if self.pitch is not None:
            parts.append(f"p{self.pitch}")
        if self.shift_cents:
            parts.append(f"c{self.shift_cents:+d}")
        return ":".join(parts)


@dataclass(frozen=True)
class SynthJob:
    """Synthesize ``text`` with ``voice`` into the FLAC file ``out``."""

    id: str
    text: str  # normalized lowercase words (espeak-ng spells out ALL-CAPS words)
    voice: Voice
    out: Path


def require_synthesizers(voices: Iterable[Voice], converter: str = "sox") -> None:
    """Raise MhoError naming the Debian package for any missing tool or voice."""
    voices = list(voices)
    if converter not in CONVERTERS:
        raise MhoError(f"unknown converter {converter!r}; known: {', '.join(CONVERTERS)}")
    tools = {SOX} if converter == "sox" else set()
    for tool in sorted(tools | {voice.engine for voice in voices}):
        if tool not in PACKAGES:
            raise MhoError(f"unknown synthesizer {tool!r}; known: {', '.join(ENGINES)}")
        if shutil.which(tool) is None:
            raise MhoError(f"{tool} not found: apt-get install {PACKAGES[tool]}")
    for voice in voices:
        if voice.engine == FESTIVAL:
            if voice.name not in FESTIVAL_VOICE_PACKAGES:
                raise MhoError(f"unknown festival voice {voice.name!r}")
            directory, package = FESTIVAL_VOICE_PACKAGES[voice.name]
            if not (FESTIVAL_VOICES / directory).is_dir():
                raise MhoError(f"festival voice {voice.name} not found: apt-get install {package}")
        elif voice.engine == FLITE and voice.name not in FLITE_VOICES:
            raise MhoError(f"unknown flite voice {voice.name!r}; known: {', '.join(FLITE_VOICES)}")


def valid_duration(path: Path) -> float | None:
    """Duration in seconds of a non-empty 16 kHz mono audio file, else None."""
    try:
        info = soundfile.info(str(path))
    except Exception:  # missing or corrupt: soundfile raises several types
        return None
    if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames == 0:
        return None
    return info.frames / info.samplerate


def synthesize(jobs: Sequence[SynthJob], converter: str = "sox") -> dict[str, float]:
    """Synthesize every job; returns utterance id -> duration in seconds.

    festival jobs share one ``festival -b`` process; the others run one process each.
    Runs in the calling process (the corpus builder calls it from worker processes).
    ``converter``: "sox" or "python" (see the module docstring).
    """
    if converter not in CONVERTERS:
        raise MhoError(f"unknown converter {converter!r}; known: {', '.join(CONVERTERS)}")
    durations = {}
    # The python converter shifts pitch through the engine's tempo (see the docstring).
    stretch = {job.id: _shift_factor(job) if converter == "python" else 1.0 for job in jobs}
    with tempfile.TemporaryDirectory(prefix="mho-synth-") as scratch:
        wavs = {job.id: Path(scratch) / f"{index}.wav" for index, job in enumerate(jobs)}
        festival_jobs = [job for job in jobs if job.voice.engine == FESTIVAL]
        if festival_jobs:
            _run_festival(festival_jobs, wavs, stretch)
        for job in jobs:
            if job.voice.engine == ESPEAK:
                _run_espeak(job, wavs[job.id])
            elif job.voice.engine == FLITE:
                _run_flite(job, wavs[job.id], stretch[job.id])
            elif job.voice.engine != FESTIVAL:
                raise MhoError(f"unknown synthesizer {job.voice.engine!r}")
            if converter == "sox":
                durations[job.id] = _to_flac(job, wavs[job.id])
            else:
                durations[job.id] = _to_flac_python(job, wavs[job.id], stretch[job.id])
    return durations


def _shift_factor(job: SynthJob) -> float:
    """Frequency factor of the job's pitch shift (1.0 without one; espeak-ng has -p)."""
    if job.voice.engine == ESPEAK or not job.voice.shift_cents:
        return 1.0
    return 2.0 ** (job.voice.shift_cents / 1200.0)


def _run(command: list[str], what: str, stdin: str | None = None) -> None:
    try:
        subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or error.stdout or "").strip().splitlines()
        last = detail[-1] if detail else f"exit status {error.returncode}"
        raise MhoError(f"{command[0]} failed on {what}: {last}") from None
    except subprocess.TimeoutExpired:
        raise MhoError(f"{command[0]} timed out on {what}") from None


def _run_espeak(job: SynthJob, wav: Path) -> None:
    voice = job.voice
    command = [ESPEAK, "-v", voice.name, "-s", str(round(ESPEAK_WORDS_PER_MINUTE * voice.speed))]
    if voice.pitch is not None:
        command += ["-p", str(voice.pitch)]
    # Text on stdin: a sentence can never be mistaken for an option.
    _run([*command, "-w", str(wav)], job.id, stdin=job.text)


def _run_flite(job: SynthJob, wav: Path, shift: float = 1.0) -> None:
    stretch = f"duration_stretch={shift / job.voice.speed:.4f}"
    _run(
        [FLITE, "-voice", job.voice.name, "--setf", stretch, "-t", job.text, "-o", str(wav)], job.id
    )


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run_festival(
    jobs: Sequence[SynthJob], wavs: dict[str, Path], shift: dict[str, float] | None = None
) -> None:
    """One festival process for all jobs: select voice, set tempo, synthesize, save.
    ``shift``: id -> extra duration factor (the python converter's pitch shift)."""
    lines = []
    current = None
    for job in jobs:
        if job.voice.name not in FESTIVAL_VOICE_PACKAGES:  # the name becomes Scheme code
            raise MhoError(f"unknown festival voice {job.voice.name!r}")
        if job.voice.name != current:
            lines.append(f"({job.voice.name})")
            current = job.voice.name
        factor = shift.get(job.id, 1.0) if shift else 1.0
        lines.append(f"(Parameter.set 'Duration_Stretch {factor / job.voice.speed:.4f})")
        lines.append(
            f"(utt.save.wave (SynthText {_scheme_string(job.text)}) "
            f"{_scheme_string(str(wavs[job.id]))} 'riff)"
        )
    script = wavs[jobs[0].id].with_name("batch.scm")
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run([FESTIVAL, "-b", str(script)], f"a batch starting with {jobs[0].id}")
    for job in jobs:
        if not wavs[job.id].is_file():
            raise MhoError(f"festival wrote no audio for {job.id} ({job.text!r})")


def _to_flac(job: SynthJob, wav: Path) -> float:
    """Convert to 16 kHz mono FLAC at job.out (atomically); returns the duration in s."""
    job.out.parent.mkdir(parents=True, exist_ok=True)
    partial = job.out.with_name(job.out.name + ".partial")
    effects = ["pitch", str(job.voice.shift_cents)] if job.voice.shift_cents else []
    # -G: sox lowers the gain where resampling or pitch shifting would clip.
    command = [SOX, "-G", str(wav), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16"]
    _run([*command, "-t", "flac", str(partial), *effects], job.id)
    return _keep_if_usable(partial, job)


def _keep_if_usable(partial: Path, job: SynthJob) -> float:
    """Move a converted file into place when it holds audio at least as long as the text
    needs (an engine that failed silently writes less); its duration in seconds."""
    duration = valid_duration(partial)
    min_duration = MIN_SECONDS_PER_WORD * len(job.text.split())
    if duration is None or duration < min_duration:
        partial.unlink(missing_ok=True)
        raise MhoError(f"{job.voice.engine} produced no usable audio for {job.id} ({job.text!r})")
    os.replace(partial, job.out)
    return duration


def _to_flac_python(job: SynthJob, wav: Path, shift: float) -> float:
    """The sox-free converter: read the engine's WAV, resample to 16 kHz (treating it as
    recorded at ``shift`` times its rate, which raises pitch and formants by ``shift`` and
    undoes the engine's ``shift``-times-longer tempo), write 16-bit FLAC atomically."""
    from math import gcd

    from scipy.signal import resample_poly

    samples, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    source = rate * shift
    if shift != 1.0:
        source = max(PYTHON_SHIFT_RATE_STEP, round(source / PYTHON_SHIFT_RATE_STEP)
                     * PYTHON_SHIFT_RATE_STEP)
    source = round(source)
    if source != SAMPLE_RATE and samples.size:
        g = gcd(SAMPLE_RATE, source)
        samples = resample_poly(samples, SAMPLE_RATE // g, source // g).astype("float32")
    peak = float(abs(samples).max()) if samples.size else 0.0
    if peak > 0.999:  # like sox -G: lower the gain rather than clip
        samples = samples * (0.999 / peak)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    partial = job.out.with_name(job.out.name + ".partial")
    soundfile.write(str(partial), samples, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return _keep_if_usable(partial, job)
