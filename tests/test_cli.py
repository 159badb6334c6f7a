"""The command line as a hostile user meets it (issue 10): every mistake is one line and
an exit code (0 ok, 1 some input failed, 2 usage error, 130 interrupted), nothing is
destroyed or half-written, and a killed batch resumes without losing or redoing work.

Everything runs in-process through :func:`lipsync_fix.cli.run` (the installed command's
own handling) except the end-to-end smoke test and the ``kill -9`` test, which need a
real process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import Outcome, invoke
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lipsync_fix import media
from lipsync_fix.cli import main_job
from lipsync_fix.data.synth import make_talking_head
from lipsync_fix.features.constants import FRAME_MS, FRAMES_PER_WINDOW
from lipsync_fix.models.checkpoint import save_checkpoint
from lipsync_fix.models.vocalist import PRESETS, VocaLiST
from lipsync_fix.sync import estimate_sync as real_estimate_sync
from lipsync_fix.sync.estimate import MAX_CONTEXT_FRAMES, MAX_DELAY_LIMIT_MS

ENTRY_POINT = Path(sys.executable).with_name("lipsync-fix")
NO_MODEL = "no-such-model"  # a checkpoint that cannot load: errors about it mean work began


@dataclasses.dataclass(frozen=True)
class Kit:
    root: Path
    ckpt: Path
    clip: Path  # a 2 s talking head with audio
    broken: Path  # bytes that are no video


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny.pth", VocaLiST(PRESETS["tiny"]))
    head = make_talking_head(4, duration_s=2.0, audio_delay_ms=120)
    clip = root / "talk.mp4"
    media.write_video(clip, head.frames, head.fps, audio=head.audio, sample_rate=16000)
    broken = root / "broken.mp4"
    broken.write_bytes(b"definitely not a video")
    return Kit(root, ckpt, clip, broken)


@pytest.fixture(scope="module")
def measured(kit: Kit):
    """One real estimate of the clip; :func:`fake_estimates` hands out copies of it, so
    tests of the batch plumbing do not pay for scoring every input."""
    from lipsync_fix.models import load_model
    from lipsync_fix.sync import SyncOptions

    model = load_model(kit.ckpt)
    return real_estimate_sync(kit.clip, model, SyncOptions(context_frames=5))


@pytest.fixture()
def fake_estimates(monkeypatch: pytest.MonkeyPatch, measured):
    """Replace the estimate inside the CLI: returns the list of inputs it was asked for."""
    calls: list[str] = []

    def estimate(path, model, options, progress=None):
        calls.append(str(path))
        media.probe(path)  # a missing or broken input still fails as it would
        return dataclasses.replace(measured, input=str(path))

    monkeypatch.setattr(main_job, "estimate_sync", estimate)
    return calls


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_clean(result: Outcome, code: int, *, lines: int | None = 1) -> None:
    """The exit code, no traceback anywhere, and ``lines`` one-line errors on stderr."""
    assert result.code == code, (result.code, result.stderr, result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
    if lines is not None:
        assert len(result.error_lines) == lines, result.stderr
        assert all(line.startswith("error: ") for line in result.error_lines), result.stderr


def videos(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- usage errors


def test_no_arguments_prints_the_help_and_exits_2() -> None:
    result = invoke()
    assert_clean(result, 2, lines=0)
    assert "Usage" in result.stdout and "fix" in result.stdout


def test_help_lists_the_main_job_first_and_version_prints_the_installed_one() -> None:
    listed = invoke("--help")
    assert listed.code == 0
    commands = listed.stdout.split("Commands:", 1)[1].split()
    names = [word for word in commands if word in ("fix", "score", "shift", "demo", "lse",
                                                    "bench", "models")]
    assert names[:4] == ["fix", "score", "shift", "demo"] and names.index("lse") > 3
    assert "<bool>" not in invoke("fix", "--help").stdout  # no type column to squeeze it
    version = invoke("--version")
    assert version.code == 0
    assert version.stdout.strip() == f"lipsync-fix {importlib.metadata.version('lipsync-fix')}"


@pytest.mark.parametrize(("args", "words"), [
    (["fix", "{clip}"], "-o OUT"),
    (["score", "{clip}", "--window", "abc"], "--window"),
    (["score", "{clip}", "--no-such-option"], "No such option"),
    (["scroe", "{clip}"], "No such command"),
    (["-x.mp4", "-o", "out.mp4"], "./-x.mp4"),
    (["score", "{clip}", "--detector", "yolo"], "auto"),
    (["score", "{clip}", "--face-box", "1,2,3"], "face box"),
    (["score", "{clip}", "--shard", "3/2"], "1 <= K <= N"),
    (["score", "{clip}", "--shard", "two"], "K/N"),
])
def test_usage_errors_are_one_line_and_exit_2(kit, monkeypatch, args, words) -> None:
    monkeypatch.chdir(kit.root)
    (kit.root / "-x.mp4").write_bytes(b"")
    result = invoke(*[a.format(clip=kit.clip) for a in args], "-c", NO_MODEL)
    assert_clean(result, 2)
    assert words in result.stderr


def test_a_file_named_like_an_option_is_read_after_double_dash(kit, monkeypatch) -> None:
    monkeypatch.chdir(kit.root)
    (kit.root / "-x.mp4").write_bytes(b"")
    result = invoke("score", "-c", NO_MODEL, "--", "-x.mp4")
    assert_clean(result, 2)
    assert "unknown checkpoint" in result.stderr  # parsing passed; the model is what failed


@pytest.mark.parametrize(("args", "words"), [
    (["score", "{clip}", "--max-delay-ms", "nan"], "largest delay"),
    (["score", "{clip}", "--max-offset-ms", "inf"], "largest delay"),
    (["score", "{clip}", "--max-delay-ms", "0"], "largest delay"),
    (["score", "{clip}", "--max-offset-ms", "-100"], "largest delay"),
    (["score", "{clip}", "--max-delay-ms", "10"], "largest delay"),
    (["score", "{clip}", "--window", "-5"], "the context must"),
    (["score", "{clip}", "--window", "0"], "the context must"),
    (["score", "{clip}", "--window", "1"], "the context must"),
    (["fix", "{clip}", "-o", "{root}/o.mp4", "--context", "1"], "the context must"),
    (["score", "{clip}", "--device", "bogus"], "unknown device"),
    (["score", "{clip}", "--plot", "{root}/x.mp4"], "PNG"),
    (["shift", "{clip}", "--audio-delay-ms", "nan", "-o", "{root}/s.mp4"], "--audio-delay-ms"),
    (["shift", "{clip}", "--audio-delay-ms", "inf", "-o", "{root}/s.mp4"], "--audio-delay-ms"),
    (["shift", "{clip}", "--audio-delay-ms", "1e308", "-o", "{root}/s.mp4"], "--audio-delay-ms"),
    (["demo", "--seconds", "-1", "--out-dir", "{root}/demo"], "demo clip"),
    (["demo", "--audio-delay-ms", "nan", "--out-dir", "{root}/demo"], "audio delay"),
    (["demo", "--audio-delay-ms", "5000", "--out-dir", "{root}/demo"], "searched range"),
    (["synth", "{root}/s", "--clips", "-3"], "--clips"),
])
def test_bad_values_are_usage_errors_before_any_work(kit, args, words) -> None:
    """Issue 10 items 4, 9 and 11: each was a traceback, a silent change of the value, or
    a misleading message. The checkpoint cannot load, so an error about it would mean the
    value was checked too late."""
    args = [a.format(clip=kit.clip, root=kit.root) for a in args]
    if args[0] != "synth":
        args += ["-c", NO_MODEL] if args[0] != "shift" else []
    before = videos(kit.root)
    result = invoke(*args)
    assert_clean(result, 2)
    assert words in result.stderr
    assert videos(kit.root) == before and not (kit.root / "demo").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_cpu_only_machine_is_one_line(kit) -> None:
    result = invoke("score", kit.clip, "--device", "cuda", "-c", NO_MODEL)
    assert_clean(result, 2)
    assert "--device cpu" in result.stderr


def test_synth_onto_an_existing_file_refuses_and_keeps_it(kit, tmp_path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    result = invoke("synth", target, "--clips", "1", "--seconds", "1.2")
    assert_clean(result, 2)
    assert target.read_text() == "mine"


def test_a_file_that_is_no_checkpoint_is_named_as_such(kit, monkeypatch) -> None:
    """Item 11: ``-c ../../etc/passwd`` said "list index out of range"."""
    monkeypatch.chdir(kit.root)
    passwd = os.path.relpath("/etc/passwd")  # ../../(...)/etc/passwd
    if not os.path.isfile(passwd):
        pytest.skip("no /etc/passwd here")
    result = invoke("score", kit.clip, "-c", passwd)
    assert_clean(result, 2)  # a usage error: the checkpoint named cannot be used
    assert "not a PyTorch checkpoint" in result.stderr and "index" not in result.stderr
    (kit.root / "notes.pth").write_text("hello")
    result = invoke("score", kit.clip, "-c", kit.root / "notes.pth")
    assert "not a PyTorch checkpoint" in result.stderr


def test_names_are_printed_as_typed(kit, tmp_path) -> None:
    """Rich markup and emoji codes in a file name are text, not formatting (a stray
    closing tag used to end in a traceback)."""
    name = str(tmp_path / "[/x] [bold]:smile: clip.mp4")
    result = invoke("score", name, "-c", kit.ckpt)
    assert_clean(result, 1)
    assert name in result.stderr


# --------------------------------------------------------------------------- outputs


def test_fix_checks_every_output_before_loading_the_model(kit, tmp_path) -> None:
    """Item 11: ``-o``, ``--plot`` and ``--report`` are refused before minutes of work, and
    a refused output leaves no folder behind."""
    other = tmp_path / "other.mp4"
    shutil.copy(kit.clip, other)
    cases = [
        (["fix", kit.clip, "-o", tmp_path / "missing" / "out.mp4"], "does not exist"),
        (["fix", kit.clip, "-o", tmp_path / "out.mp3"], "video container"),
        (["fix", kit.clip, other, "-o", tmp_path / "out.mp4"], "folder"),
        (["fix", kit.clip, "-o", tmp_path / "o.mp4", "--report", tmp_path / "nope" / "r.csv"],
         "does not exist"),
        (["score", kit.clip, "--plot", tmp_path / "nope" / "p.png"], "does not exist"),
        (["score", kit.clip, other, "--plot", tmp_path / "plots.png"], "folder"),
        (["fix", kit.clip, "-o", tmp_path / "out", "--report", kit.clip], ".csv or .jsonl"),
    ]
    for args, words in cases:
        result = invoke(*args, "-c", NO_MODEL)
        assert_clean(result, 2)
        assert words in result.stderr, (args, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.mp4"]


def test_a_report_never_replaces_an_input_or_a_foreign_file(kit, tmp_path) -> None:
    """Item 1: ``--report`` used to truncate whatever it named, the input included."""
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\nspreadsheet,data\n")
    clip_csv = tmp_path / "clip.csv"  # an input that happens to end in .csv
    clip_csv.write_bytes(kit.clip.read_bytes())
    before = sha(kit.clip)
    for args in (["fix", kit.clip, "-o", tmp_path / "f.mp4", "--report", kit.clip],
                 ["score", kit.clip, "--report", notes],
                 ["score", clip_csv, "--report", clip_csv]):
        result = invoke(*args, "-c", NO_MODEL)
        assert_clean(result, 2)
    assert sha(kit.clip) == before and sha(clip_csv) == before
    assert notes.read_text() == "my,own\nspreadsheet,data\n"


def test_shift_and_fix_word_an_existing_output_alike(kit, tmp_path) -> None:
    """Item 11: ``shift`` said "pass force" (exit 2) where ``fix`` said "use --force"."""
    target = tmp_path / "out.mp4"
    target.write_bytes(b"keep me")
    shifted = invoke("shift", kit.clip, "--audio-delay-ms", "40", "-o", target)
    fixed = invoke("fix", kit.clip, "-o", target, "-c", NO_MODEL)
    assert_clean(shifted, 2)
    assert shifted.code == fixed.code and shifted.stderr == fixed.stderr
    assert "use --force" in shifted.stderr and target.read_bytes() == b"keep me"


def test_shift_quiet_prints_nothing_and_still_writes(kit, tmp_path) -> None:
    target = tmp_path / "out.mp4"
    loud = invoke("shift", kit.clip, "--audio-delay-ms", "40", "-o", target)
    quiet = invoke("shift", kit.clip, "--audio-delay-ms", "40", "-o", tmp_path / "q.mp4", "-q")
    assert loud.code == quiet.code == 0 and loud.stdout.startswith("wrote ")
    assert quiet.stdout == "" and (tmp_path / "q.mp4").stat().st_size > 0


def test_several_inputs_never_make_a_folder_named_like_a_file(kit, tmp_path) -> None:
    other = tmp_path / "b.mp4"
    shutil.copy(kit.clip, other)
    result = invoke("fix", kit.clip, other, "-o", tmp_path / "out.mp4", "-c", NO_MODEL)
    assert_clean(result, 2)
    assert not (tmp_path / "out.mp4").exists()


def test_same_names_in_two_folders_are_mirrored_never_skipped(kit, tmp_path,
                                                              fake_estimates) -> None:
    """Item 2: x/clip.mp4 and y/clip.mp4 both became OUT/clip.fixed.mp4 (the second
    skipped forever, or written over the first with --force)."""
    for sub in ("x", "y"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(kit.clip, tmp_path / "in" / sub / "clip.mp4")
    out = tmp_path / "out"
    result = invoke("fix", tmp_path / "in", "-o", out, "-c", kit.ckpt, "--apply-uncertain")
    assert_clean(result, 0, lines=0)
    assert videos(out) == ["x/clip.fixed.mp4", "y/clip.fixed.mp4"]
    given_apart = invoke("fix", tmp_path / "in" / "x" / "clip.mp4",
                         tmp_path / "in" / "y" / "clip.mp4", "-o", tmp_path / "flat",
                         "-c", kit.ckpt, "--force")
    assert_clean(given_apart, 2)
    assert "would both be written" in given_apart.stderr and not (tmp_path / "flat").exists()


def test_outputs_inside_the_input_folder_are_not_inputs(kit, tmp_path, fake_estimates) -> None:
    """Item 8: ``-o`` inside the input folder made a rerun fix its own outputs
    (``a.fixed.fixed.mp4``) and pick up hidden temporary files."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(kit.clip, folder / "a.mp4")
    args = ["fix", folder, "-o", folder / "fixed", "-c", kit.ckpt, "--apply-uncertain"]
    assert_clean(invoke(*args), 0, lines=0)
    (folder / "fixed" / ".a.fixed.0badc0de.partial.mp4").write_bytes(b"torn")
    (folder / ".b.12345678.partial.mp4").write_bytes(b"torn")
    again = invoke(*args)
    assert_clean(again, 0, lines=0)
    assert "skipped, output exists" in again.stdout
    assert fake_estimates == [str(folder / "a.mp4")]  # scored once, in the first run
    assert videos(folder) == [".b.12345678.partial.mp4", "a.mp4", "fixed/a.fixed.mp4"]
    itself = invoke("fix", folder, "-o", folder, "-c", kit.ckpt)
    assert_clean(itself, 2)
    assert "is the input folder" in itself.stderr


# --------------------------------------------------------------------------- JSON, codes


def test_json_mode_prints_one_object_per_input_and_nothing_else(kit, fake_estimates) -> None:
    missing = kit.root / "missing.mp4"
    result = invoke("score", kit.clip, kit.broken, missing, "-c", kit.ckpt, "--json")
    assert_clean(result, 1, lines=2)
    records = result.json_lines()  # raises if anything but JSON is on stdout
    assert [r["input"] for r in records] == sorted(map(str, [kit.clip, kit.broken, missing]))
    errors = {r["input"]: r["error"] for r in records if "error" in r}
    assert set(errors) == {str(kit.broken), str(missing)}
    assert "does not exist" in errors[str(missing)]
    usage = invoke("score", kit.clip, "--window", "x", "--json")
    assert_clean(usage, 2)
    assert usage.json_lines() == [{"error": usage.error_lines[0][len("error: "):],
                                   "exit_code": 2}]


def test_interrupt_exits_130_and_keeps_what_was_done(kit, tmp_path, monkeypatch,
                                                     measured) -> None:
    inputs = [tmp_path / f"{name}.mp4" for name in "abc"]
    for path in inputs:
        shutil.copy(kit.clip, path)

    def estimate(path, model, options, progress=None):
        if Path(path).name == "b.mp4":
            raise KeyboardInterrupt
        return dataclasses.replace(measured, input=str(path))

    monkeypatch.setattr(main_job, "estimate_sync", estimate)
    report = tmp_path / "r.jsonl"
    result = invoke("score", *inputs, "-c", kit.ckpt, "--report", report)
    assert_clean(result, 130)
    assert result.stderr == "error: interrupted\n"
    assert [r["input"] for r in map(json.loads, report.read_text().splitlines())] == \
        [str(inputs[0])]


def test_an_internal_error_costs_one_input_not_the_batch(kit, tmp_path, monkeypatch,
                                                         measured) -> None:
    inputs = [tmp_path / f"{name}.mp4" for name in "ab"]
    for path in inputs:
        shutil.copy(kit.clip, path)

    def estimate(path, model, options, progress=None):
        if Path(path).name == "a.mp4":
            raise RuntimeError("a bug")
        return dataclasses.replace(measured, input=str(path))

    monkeypatch.setattr(main_job, "estimate_sync", estimate)
    result = invoke("score", *inputs, "-c", kit.ckpt, "--json")
    assert_clean(result, 1)
    assert "internal error" in result.stderr and "RuntimeError: a bug" in result.stderr
    assert "error" not in result.json_lines()[1]
    debug = invoke("score", *inputs, "-c", kit.ckpt, "--debug")
    assert debug.code == 1 and "Traceback" in debug.stderr


def test_shards_cover_every_input_once_and_merge_into_one_report(kit, tmp_path,
                                                                 fake_estimates) -> None:
    """Item 4: ``--shard K/N`` as a job array runs it; ``report merge`` joins the parts."""
    folder = tmp_path / "in"
    for i in range(5):
        (folder / f"s{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(kit.clip, folder / f"s{i % 2}" / f"clip{i}.mp4")
    reports = []
    for k in (1, 2, 3):
        reports.append(tmp_path / f"part{k}.jsonl")
        result = invoke("fix", folder, "-o", tmp_path / "out", "-c", kit.ckpt, "--shard",
                        f"{k}/3", "--report", reports[-1], "--apply-uncertain", "-q")
        assert_clean(result, 0, lines=0)
    assert sorted(fake_estimates) == sorted(str(p) for p in folder.rglob("*.mp4"))
    merged = invoke("report", "merge", *reports, "-o", tmp_path / "all.csv", "--json")
    assert_clean(merged, 0, lines=0)
    assert merged.json_lines() == [{"output": str(tmp_path / "all.csv"), "kind": "fix",
                                    "inputs": 5, "reports": 3, "failed": 0}]
    assert len(videos(tmp_path / "out")) == 5
    empty = invoke("score", kit.clip, "-c", kit.ckpt, "--shard", "2/2")
    assert empty.code == 0 and "no inputs" in empty.stderr


# --------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
ARG_TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=30)  # argv has no NUL


def _number_text(value: float | int | str) -> str:
    return value if isinstance(value, str) else repr(value)


@SETTINGS
@given(offset=st.one_of(st.floats(), st.integers(-10**6, 10**6), ARG_TEXT),
       context=st.one_of(st.integers(-10**4, 10**4), ARG_TEXT))
def test_numeric_options_exit_1_or_2_with_one_line(kit, offset, context) -> None:
    """Whatever is typed for the numbers: no traceback, one line, and exit 2 exactly when
    a number is out of range (the input is missing, so a valid line exits 1)."""
    result = invoke("score", kit.root / "missing.mp4", "-c", kit.ckpt,
                    "--max-offset-ms", _number_text(offset), "--window", _number_text(context))
    assert_clean(result, result.code)
    assert result.code in (1, 2)
    if not isinstance(offset, str) and not isinstance(context, str):
        valid = (math.isfinite(offset) and FRAME_MS <= offset <= MAX_DELAY_LIMIT_MS
                 and FRAMES_PER_WINDOW <= context <= MAX_CONTEXT_FRAMES)
        assert result.code == (1 if valid else 2), result.stderr


@SETTINGS
@given(command=st.sampled_from(["fix", "score", "shift"]), path=ARG_TEXT, target=ARG_TEXT,
       option=st.sampled_from(["-o", "--plot", "--report", "--shard", "--face-box"]))
def test_any_path_or_option_text_is_one_line(kit, tmp_path_factory, command, path, target,
                                             option) -> None:
    """Arbitrary text as the input and as an option's value: exit 1 or 2 (0 for a help
    page or an empty shard), at most one line on stderr, and nothing left in the working
    folder by a run whose only input failed, except the report it was asked for."""
    # An existing folder (".", "/") would be searched; an absolute or upward output could
    # land outside this test's folder.
    assume(not os.path.exists(path))
    assume(not os.path.isabs(target) and ".." not in target and not target.startswith("~"))
    workdir = tmp_path_factory.mktemp("fuzz")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        args = [command, path, option, target]
        if command == "shift":
            args += ["--audio-delay-ms", "40"] + (["-o", "x.mp4"] if option != "-o" else [])
        elif command == "fix" and option != "-o":
            args += ["-o", "x.mp4"]
        if command != "shift":
            args += ["-c", str(kit.ckpt)]
        result = invoke(*args)
        # Exit 0 only for a help page, or a shard left empty by "--shard K/N" with K > 1.
        assert result.code in ((0, 1, 2) if "--help" in args or option == "--shard"
                               else (1, 2))
        assert_clean(result, result.code, lines=1 if result.code else None)
        assert len(result.error_lines) <= 1
        allowed = set()
        if option == "--report" and result.code == 1:
            allowed = {target, target + ".journal"}
        assert {p.name for p in workdir.iterdir()} <= allowed
    finally:
        os.chdir(cwd)


# --------------------------------------------------------------------------- processes


def test_entry_point_end_to_end(kit) -> None:
    """The one smoke test through the installed ``lipsync-fix``: exit status, JSON on
    stdout and the error line on stderr survive a real process."""
    if not ENTRY_POINT.is_file():
        pytest.skip(f"{ENTRY_POINT} is not installed (pip install -e .)")
    run = subprocess.run([str(ENTRY_POINT), "score", str(kit.clip), str(kit.broken), "-c",
                          str(kit.ckpt), "--window", "5", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [("error" in r) for r in records] == [True, False]  # broken.mp4 sorts first
    assert records[1]["verdict"] in {"in_sync", "out_of_sync", "uncertain"}
    assert len(run.stderr.splitlines()) == 1 and "Traceback" not in run.stderr


@pytest.mark.slow  # a real process, killed and rerun: ~10-20 s
def test_kill_9_then_rerun_loses_nothing_and_redoes_nothing(kit, tmp_path) -> None:
    """Item 8: a folder run killed with SIGKILL after its first input; the same command
    again finishes the rest, skips what was done, cleans temporary files, and its report
    keeps the first run's measurements."""
    folder, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "report.jsonl"
    folder.mkdir()
    names = [f"{c}.mp4" for c in "abcde"]
    for name in names:
        shutil.copy(kit.clip, folder / name)
    args = ["fix", str(folder), "-o", str(out), "-c", str(kit.ckpt), "--window", "5",
            "--apply-uncertain", "--report", str(report), "--json"]
    journal = report.with_name(report.name + ".journal")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen([sys.executable, "-m", "lipsync_fix", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
        deadline = time.monotonic() + 240
        while not (journal.is_file() and journal.read_bytes().endswith(b"\n")):
            assert first.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "no input finished in time"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    done_first = {r["input"]: r for r in map(json.loads, journal.read_text().splitlines())}
    assert 1 <= len(done_first) < len(names)
    written = {p: sha(out / Path(p).name.replace(".mp4", ".fixed.mp4")) for p in done_first}
    (out / ".e.fixed.0badc0de.partial.mp4").write_bytes(b"left by a killed writer")

    rerun = invoke(*args)
    assert_clean(rerun, 0, lines=0)
    by_input = {r["input"]: r for r in rerun.json_lines()}
    assert sorted(by_input) == [str(folder / n) for n in names]
    for path, record in by_input.items():
        assert (record.get("skipped") == "done earlier") == (path in done_first)
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert sorted(r["input"] for r in lines) == sorted(by_input)  # each input once
    assert videos(out) == [n.replace(".mp4", ".fixed.mp4") for n in names]
    for path, digest in written.items():
        assert sha(out / Path(path).name.replace(".mp4", ".fixed.mp4")) == digest
    final = {r["input"]: r for r in map(json.loads, report.read_text().splitlines())}
    assert sorted(final) == sorted(by_input)
    for path, record in done_first.items():
        assert final[path] == record  # the first run's measurements are kept
