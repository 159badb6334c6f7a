"""The model registry and manager: entries, checksummed downloads with mirrors, the
verification record, ``lipsync-fix models`` and the default-model policy.

Downloads go to an HTTP server on 127.0.0.1 that serves, refuses (404) or breaks off
files (the ``server`` fixture of conftest.py); ``$LIPSYNC_FIX_CACHE`` and
``$LIPSYNC_FIX_REGISTRY`` point at test folders, and ``$TORCH_HOME`` at a test folder for
torch hub's files. Google Drive is faked at gdown's boundary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import SHARED, needs_shared
from typer.testing import CliRunner

from lipsync_fix.cli import main
from lipsync_fix.cli.app import app
from lipsync_fix.errors import CheckpointError
from lipsync_fix.faces.detectors import S3FD_WEIGHTS_FILE, s3fd_weights_path
from lipsync_fix.files import is_partial
from lipsync_fix.models import registry as reg
from lipsync_fix.models import store
from lipsync_fix.models.checkpoint import save_checkpoint
from lipsync_fix.models.registry import (
    REGISTRY_FILE,
    default_model_name,
    default_model_notice,
    download_model,
    load_model,
    load_registry,
    resolve_checkpoint,
)
from lipsync_fix.models.store import file_sha256, target_path, trust_path
from lipsync_fix.models.vocalist import PRESETS, VocaLiST

REPO = Path(__file__).resolve().parents[1]
DRIVE = "https://drive.google.com/drive/folders/1-g4qHUNNcCZpmSqEflKMxPMvwnn9e88N"


# --- fixtures ---------------------------------------------------------------------------

@pytest.fixture()
def tiny_bytes(tmp_path):
    torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "made" / "tiny.pth", VocaLiST(PRESETS["tiny"]))
    return path.read_bytes()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A private cache, torch hub folder and registry file for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIPSYNC_FIX_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    registry_file = tmp_path / "registry.json"
    monkeypatch.setenv("LIPSYNC_FIX_REGISTRY", str(registry_file))

    def use(entries: dict) -> dict:
        registry_file.write_text(json.dumps(entries))
        return load_registry()

    return SimpleNamespace(cache=cache, registry_file=registry_file, use=use)


def entry(filename: str, urls: list[str], sha256: str | None, **more) -> dict:
    return {"filename": filename, "urls": urls, "sha256": sha256, "family": "vocalist",
            "preset": "tiny", "licence": "test", "source": "test", "card": "x.md", **more}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Everything in ``folder`` except the verification record."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != store.VERIFIED_FILE)


# --- the package's registry -------------------------------------------------------------

def test_package_registry_is_models_registry_json():
    assert REGISTRY_FILE.is_symlink()
    assert REGISTRY_FILE.resolve() == (REPO / "models" / "registry.json").resolve()
    registry = load_registry(REGISTRY_FILE)
    assert {"vocalist-lrs2", "vocalist-acappella", "syncnet-v2", "s3fd", "demo-small",
            "demo-small-syncnet"} <= set(registry)
    for name, item in registry.items():
        for key in ("family", "preset", "licence", "source", "card", "filename", "description"):
            assert item.get(key), f"{name} lacks {key}"
        assert (REPO / "models" / item["card"]).is_file(), f"{name}: no card {item['card']}"
    readme = (REPO / "models" / "README.md").read_text()
    assert all(item["card"] in readme for item in registry.values())


def test_syncnet_v2_and_s3fd_entries(monkeypatch, tmp_path):
    registry = load_registry(REGISTRY_FILE)
    syncnet = registry["syncnet-v2"]
    assert syncnet["family"] == "syncnet-v2" and syncnet["filename"] == "syncnet_v2.model"
    assert syncnet["urls"][0].endswith("robots.ox.ac.uk/~vgg/software/lipsync/data/"
                                       "syncnet_v2.model")
    assert len(syncnet["urls"]) == 4 and all(u.startswith("http") for u in syncnet["urls"])
    s3fd = registry["s3fd"]
    # torch hub names files after the start of their sha256: the full hash must agree.
    assert s3fd["sha256"].startswith(S3FD_WEIGHTS_FILE.split("-")[1].split(".")[0])
    assert s3fd["filename"] == S3FD_WEIGHTS_FILE and s3fd["kind"] == "face-detector"
    assert any("adrianbulat.com" in u for u in s3fd["urls"][:1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert target_path(s3fd) == s3fd_weights_path()  # where face-alignment looks
    ranks = {n: e["default"] for n, e in registry.items() if "default" in e}
    assert sorted(ranks, key=ranks.get) == ["vocalist-lrs2", "mtdvocalist-lrs2", "syncnet-v2"]
    assert [n for n, e in registry.items() if e.get("download_by_default")] == [
        "mtdvocalist-lrs2"]
    for name in ("vocalist-lrs2", "vocalist-acappella"):
        assert registry[name]["urls"] == [] and DRIVE in registry[name]["source"]
        assert DRIVE.endswith(registry[name]["drive_folder"])
        assert registry[name]["layout"] == "golden/state_dict_manifest.json"


@needs_shared
def test_syncnet_v2_entry_matches_the_spec():
    """The locations and the sha256 are the ones ../shared/syncnet/SPEC.md names, in order."""
    spec = (SHARED / "syncnet" / "SPEC.md").read_text()
    section = spec[spec.index("## 1. Checkpoint"): spec.index("## 2.")]
    expected_sha = re.search(r"Expected SHA-256: `([0-9a-f]{64})`", section).group(1)
    urls = load_registry(REGISTRY_FILE)["syncnet-v2"]["urls"]
    assert load_registry(REGISTRY_FILE)["syncnet-v2"]["sha256"] == expected_sha
    assert urls[0] == re.search(r"`(http://www\.robots\.ox\.ac\.uk/\S+syncnet_v2\.model)`",
                                section).group(1)
    repos = re.findall(r"`([\w.-]+/[\w.-]+)`", section)
    mirrors = [r for r in repos if r.startswith(("ByteDance/", "lithiumice/"))]
    assert len(mirrors) == 3
    for url, repo in zip(urls[1:], mirrors, strict=True):
        assert url.startswith(f"https://huggingface.co/{repo}/resolve/main/")


def test_malformed_entries_are_refused(env):
    with pytest.raises(CheckpointError, match="neither a sha256 nor a layout"):
        env.use({"x": entry("x.pth", ["http://127.0.0.1:9/x.pth"], None)})
    with pytest.raises(CheckpointError, match="64 lower-case hex"):
        env.use({"x": entry("x.pth", [], "619a316812")})


# --- downloads ------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_good_download_is_verified_with_normal_permissions(env, server, tiny_bytes, umask):
    server.files["tiny.pth"] = tiny_bytes
    registry = env.use({"good": entry("tiny.pth", [f"{server.base}/m/tiny.pth"],
                                      sha(tiny_bytes))})
    seen = []
    old = os.umask(umask)
    try:
        path = download_model("good", registry, progress=lambda done, total: seen.append(
            (done, total)))
    finally:
        os.umask(old)
    assert path == env.cache / "tiny.pth" and path.read_bytes() == tiny_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert seen[-1] == (len(tiny_bytes), len(tiny_bytes))
    assert leftovers(env.cache) == ["tiny.pth"]
    model = load_model("good")
    assert model.origin == {"name": "good", "family": "vocalist",
                            "sha256": sha(tiny_bytes)[:12], "path": str(path)}
    assert server.hits == ["/m/tiny.pth"]  # loading used the cached file


def test_wrong_sha256_keeps_nothing(env, server, tiny_bytes):
    server.files["tiny.pth"] = tiny_bytes
    registry = env.use({"bad": entry("tiny.pth", [f"{server.base}/tiny.pth"], "0" * 64)})
    with pytest.raises(CheckpointError) as info:
        download_model("bad", registry)
    message = str(info.value)
    assert "did not match its sha256" in message and "\n" not in message
    assert leftovers(env.cache) == []


def test_404_then_a_working_mirror(env, server, tiny_bytes, dead_url):
    server.files["tiny.pth"] = tiny_bytes
    urls = [f"{server.base}/missing/tiny.pth", f"{dead_url}/tiny.pth",
            f"{server.base}/mirror/tiny.pth"]
    registry = env.use({"m": entry("tiny.pth", urls, sha(tiny_bytes))})
    path = download_model("m", registry)
    assert path.read_bytes() == tiny_bytes
    assert server.hits == ["/missing/tiny.pth", "/mirror/tiny.pth"]
    assert leftovers(env.cache) == ["tiny.pth"]


def test_all_mirrors_down_is_one_offline_line(env, dead_url):
    registry = env.use({"syncnet-v2": entry("syncnet_v2.model",
                                            [f"{dead_url}/a", f"{dead_url}/b"], "1" * 64)})
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint("syncnet-v2", registry)
    assert str(info.value) == (
        "cannot download syncnet-v2: no network (tried 2 locations); download it elsewhere "
        "(lipsync-fix models download syncnet-v2) and pass --checkpoint PATH or put it in "
        f"{env.cache / 'syncnet_v2.model'}")
    assert leftovers(env.cache) == []


def test_mixed_failures_are_named(env, server, dead_url):
    registry = env.use({"x": entry("x.pth", [f"{server.base}/missing/x.pth", f"{dead_url}/x"],
                                   "1" * 64)})
    with pytest.raises(CheckpointError, match=r"HTTP 404 from 127\.0\.0\.1:\d+; no connection"):
        download_model("x", registry)


def test_interrupted_download_leaves_nothing(env, server, tiny_bytes):
    server.files["tiny.pth"] = tiny_bytes
    registry = env.use({
        "cut": entry("tiny.pth", [f"{server.base}/broken/tiny.pth"], sha(tiny_bytes)),
        "ok": entry("tiny.pth", [f"{server.base}/tiny.pth"], sha(tiny_bytes)),
    })
    with pytest.raises(CheckpointError, match="broke off after"):
        download_model("cut", registry)
    assert leftovers(env.cache) == []

    def ctrl_c(done, total):
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_model("ok", registry, progress=ctrl_c)
    assert leftovers(env.cache) == []
    assert not any(is_partial(p) for p in env.cache.iterdir())


def test_cached_file_is_verified_once_and_tampering_is_caught(env, server, tiny_bytes,
                                                              dead_url, monkeypatch):
    server.files["tiny.pth"] = tiny_bytes
    registry = env.use({"good": entry("tiny.pth", [f"{server.base}/tiny.pth"],
                                      sha(tiny_bytes))})
    path = download_model("good", registry)
    hashed = []
    real = store.sha256_of
    monkeypatch.setattr(store, "sha256_of", lambda p: hashed.append(p) or real(p))
    assert download_model("good", registry) == path and hashed == []  # remembered

    # Same size, same mtime, different bytes: the ctime gives the edit away. The kernel
    # stamps times at its clock tick (up to 10 ms), so the edit waits for a new tick: an
    # edit within the same tick as the download is not what this test is about.
    before = path.stat()
    data = bytearray(tiny_bytes)
    data[-100] ^= 0xFF
    for _ in range(100):
        time.sleep(0.01)
        path.write_bytes(bytes(data))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            break
    assert path.stat().st_ctime_ns != before.st_ctime_ns
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert file_sha256(path) != sha(tiny_bytes) and hashed

    # Online, a bad cached file is downloaded again and replaced by a good copy...
    assert download_model("good", registry, quiet=True).read_bytes() == tiny_bytes
    assert server.hits == ["/tiny.pth", "/tiny.pth"]
    # ...offline, it is refused with a line that says so.
    path.write_bytes(b"tampered")
    offline = env.use({"good": entry("tiny.pth", [f"{dead_url}/tiny.pth"], sha(tiny_bytes))})
    with pytest.raises(CheckpointError, match="does not match the sha256 of good, and cannot "
                                              "download good: no network"):
        download_model("good", offline, quiet=True)
    assert path.read_bytes() == b"tampered"  # nothing is deleted behind the user's back


def test_manual_entries_say_where_the_file_goes(env):
    registry = env.use({"vocalist-lrs2": entry("vocalist_5f_lrs2.pth", [], None, source=DRIVE)})
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint("vocalist-lrs2", registry)
    message = str(info.value)
    assert DRIVE in message and str(env.cache / "vocalist_5f_lrs2.pth") in message
    assert "--checkpoint PATH" in message
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        resolve_checkpoint("no-such-model", registry)
    env.cache.mkdir()
    (env.cache / "vocalist_5f_lrs2.pth").write_bytes(b"x")
    assert resolve_checkpoint("vocalist-lrs2", registry).is_file()


def test_s3fd_goes_where_face_alignment_looks(env, server):
    weights = b"not really S3FD, but the bytes the registry promises"
    server.files[S3FD_WEIGHTS_FILE] = weights
    registry = env.use({"s3fd": entry(S3FD_WEIGHTS_FILE, [f"{server.base}/{S3FD_WEIGHTS_FILE}"],
                                      sha(weights), kind="face-detector", folder="torch-hub")})
    assert download_model("s3fd", registry) == s3fd_weights_path()
    assert s3fd_weights_path().read_bytes() == weights
    with pytest.raises(CheckpointError, match="face-detector weights"):
        load_model("s3fd")


def test_origin_of_a_path_names_the_entry_with_its_hash(env, tmp_path, tiny_bytes):
    file = tmp_path / "somewhere" / "copy.pth"
    file.parent.mkdir()
    file.write_bytes(tiny_bytes)
    env.use({"published": entry("p.pth", [], sha(tiny_bytes))})
    assert load_model(file).origin["name"] == "published"
    env.use({})
    assert load_model(file).origin["name"] == str(file)


# --- the default model -----------------------------------------------------------------

def default_registry(env, server, tiny_bytes) -> dict:
    server.files["mtd.pth"] = tiny_bytes
    return env.use({
        "vocalist-lrs2": entry("vocalist_5f_lrs2.pth", [], None, source=DRIVE, default=1),
        "mtdvocalist-lrs2": entry("mtd.pth", [f"{server.base}/mtd.pth"], sha(tiny_bytes),
                                  default=2, download_by_default=True),
        "syncnet-v2": entry("syncnet_v2.model", [f"{server.base}/syncnet_v2.model"],
                            sha(tiny_bytes), default=3),
        "other": entry("other.pth", [], None),
    })


def test_default_is_vocalist_when_cached_else_mtdvocalist(env, server, tiny_bytes):
    default_registry(env, server, tiny_bytes)
    assert default_model_name() == "mtdvocalist-lrs2"
    assert server.hits == ["/mtd.pth"]  # downloaded on first use, syncnet-v2 never
    notice = default_model_notice("mtdvocalist-lrs2")
    assert notice.startswith(f"using mtdvocalist-lrs2 (vocalist, from {env.cache / 'mtd.pth'}"
                             "); for better accuracy get vocalist-lrs2: open ")
    assert DRIVE in notice and str(env.cache / "vocalist_5f_lrs2.pth") in notice
    assert "\n" not in notice
    (env.cache / "vocalist_5f_lrs2.pth").write_bytes(b"placed by the user")
    assert default_model_name() == "vocalist-lrs2"
    assert default_model_notice("vocalist-lrs2") == (
        f"using vocalist-lrs2 (vocalist, from {env.cache / 'vocalist_5f_lrs2.pth'})")


def test_score_without_checkpoint_downloads_the_default_and_says_so(env, server, tiny_bytes,
                                                                    tmp_path):
    default_registry(env, server, tiny_bytes)
    video = tmp_path / "not_a_video.mp4"
    video.write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["score", str(video)])
    assert result.exit_code == 1  # the input fails, after the model was chosen and loaded
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"using mtdvocalist-lrs2 (vocalist, from {env.cache}")
    assert "for better accuracy get vocalist-lrs2" in lines[0]
    assert (env.cache / "mtd.pth").read_bytes() == tiny_bytes
    quiet = CliRunner().invoke(app, ["score", str(video), "--quiet"])
    assert quiet.exit_code == 1 and "using mtdvocalist-lrs2" not in quiet.stderr


# --- Google Drive, faked at gdown's boundary ----------------------------------------------

@pytest.fixture()
def drive(monkeypatch):
    """A fake ``gdown``: ``folders`` maps a folder id to its files ({name: bytes}); a
    folder not there is refused as Drive refuses (None); ``calls`` logs what was asked."""
    state = SimpleNamespace(folders={}, calls=[], refuse_download=False)

    def download_folder(id=None, skip_download=False, quiet=False, **kwargs):
        state.calls.append(("list", id, skip_download))
        files = state.folders.get(id)
        if files is None:
            return None
        return [SimpleNamespace(id=f"id-{name}", path=f"weights/{name}",
                                local_path=f"/nowhere/{name}") for name in files]

    def download(id=None, output=None, quiet=False, **kwargs):
        state.calls.append(("get", id, output))
        if state.refuse_download:
            return None
        for files in state.folders.values():
            for name, body in files.items():
                if id == f"id-{name}":
                    Path(output).write_bytes(body)
                    return output
        return None

    monkeypatch.setattr(store, "gdown", SimpleNamespace(download_folder=download_folder,
                                                      download=download))
    return state


def drive_entry(sha256: str | None = None, **more) -> dict:
    return entry("vocalist_5f_lrs2.pth", [], sha256, source=DRIVE,
                 drive_folder=DRIVE.rsplit("/", 1)[1], **more)


def test_drive_download_lists_picks_by_name_checks_and_records(env, drive, tiny_bytes,
                                                               tmp_path):
    folder = DRIVE.rsplit("/", 1)[1]
    drive.folders[folder] = {"vocalist_5f_acappella.pth": b"other", "vocalist_5f_lrs2.pth":
                             tiny_bytes}
    manifest = tmp_path / "tiny_layout.json"
    state = VocaLiST(PRESETS["tiny"]).state_dict()
    manifest.write_text(json.dumps({"entries": [
        {"key": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in state.items()]}))
    registry = env.use({"vocalist-lrs2": drive_entry(layout=str(manifest))})
    assert reg.how_to_get("vocalist-lrs2", registry).startswith(
        "run lipsync-fix models download vocalist-lrs2")
    run = CliRunner().invoke(app, ["models", "download", "vocalist-lrs2"])
    assert run.exit_code == 0, run.output
    target = env.cache / "vocalist_5f_lrs2.pth"
    assert target.read_bytes() == tiny_bytes
    assert drive.calls[0] == ("list", folder, True)
    assert drive.calls[1][:2] == ("get", "id-vocalist_5f_lrs2.pth")
    assert Path(drive.calls[1][2]).parent == env.cache and is_partial(Path(drive.calls[1][2]))
    assert f"sha256 {sha(tiny_bytes)}" in run.stderr
    assert json.loads(trust_path(target).read_text())["sha256"] == sha(tiny_bytes)
    assert leftovers(env.cache) == ["vocalist_5f_lrs2.pth", trust_path(target).name]
    assert load_model("vocalist-lrs2").family == "vocalist"

    # a wrong file from Drive is refused and leaves nothing
    target.unlink()
    trust_path(target).unlink()
    drive.folders[folder]["vocalist_5f_lrs2.pth"] = b"<html>Google Drive - quota</html>"
    wrong = CliRunner().invoke(app, ["models", "download", "vocalist-lrs2"])
    assert wrong.exit_code == 1 and "not the expected model file" in wrong.stderr
    assert leftovers(env.cache) == []


@pytest.mark.parametrize("refusal", ["folder", "file", "missing"])
def test_drive_refusal_is_one_line_with_the_manual_steps(env, drive, refusal):
    folder = DRIVE.rsplit("/", 1)[1]
    if refusal != "folder":
        drive.folders[folder] = {"vocalist_5f_lrs2.pth" if refusal == "file"
                                 else "readme.txt": b"x"}
    drive.refuse_download = True
    registry = env.use({"vocalist-lrs2": drive_entry(sha256="2" * 64)})
    with pytest.raises(CheckpointError) as info:
        download_model("vocalist-lrs2", registry)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("cannot download vocalist-lrs2 from Google Drive: ")
    assert f"open {DRIVE} in a browser, download vocalist_5f_lrs2.pth and put it at " \
        f"{env.cache / 'vocalist_5f_lrs2.pth'} (or pass --checkpoint PATH)" in line
    assert leftovers(env.cache) == []


# --- the command line ------------------------------------------------------------------

def test_models_list_download_verify(env, server, tiny_bytes):
    server.files["tiny.pth"] = tiny_bytes
    env.use({
        "good": entry("tiny.pth", [f"{server.base}/tiny.pth"], sha(tiny_bytes),
                      size_bytes=len(tiny_bytes)),
        "manual": entry("manual.pth", [], None, source=DRIVE),
    })
    runner = CliRunner()
    listing = runner.invoke(app, ["models", "--json"])
    assert listing.exit_code == 0, listing.output
    records = {r["name"]: r for r in map(json.loads, listing.stdout.splitlines())}
    assert set(records) == {"good", "manual"}
    assert records["good"]["cached"] is False and records["good"]["verified"] is None
    assert records["good"]["how_to_get"].startswith("run lipsync-fix models download good")
    assert DRIVE in records["manual"]["how_to_get"]
    assert str(env.cache / "manual.pth") in records["manual"]["how_to_get"]

    text = runner.invoke(app, ["models"])
    assert text.exit_code == 0 and "good (vocalist, tiny," in text.stdout
    assert "not downloaded" in text.stdout and "licence: test" in text.stdout

    fetched = runner.invoke(app, ["models", "download", "good"])
    assert fetched.exit_code == 0, fetched.output
    assert "verified" in fetched.stdout and (env.cache / "tiny.pth").is_file()
    again = {json.loads(line)["name"]: json.loads(line)
             for line in runner.invoke(app, ["models", "--json"]).stdout.splitlines()}
    assert again["good"]["cached"] and again["good"]["verified"] is True

    manual = runner.invoke(app, ["models", "download", "good", "manual"])
    assert manual.exit_code == 1 and DRIVE in manual.stderr

    verified = runner.invoke(app, ["models", "verify"])
    assert verified.exit_code == 0 and "good:" in verified.stdout
    (env.cache / "tiny.pth").write_bytes(b"tampered")
    broken = runner.invoke(app, ["models", "verify", "good"])
    assert broken.exit_code == 1 and "not the published" in broken.stderr
    missing = runner.invoke(app, ["models", "verify", "manual"])
    assert missing.exit_code == 1


def test_unknown_name_is_a_usage_error(env, capsys):
    env.use({"good": entry("tiny.pth", [], None)})
    with pytest.raises(SystemExit) as info:
        main(["models", "download", "nope"])
    assert info.value.code == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_models_command_from_a_fresh_process(env):
    env.use({"manual": entry("manual.pth", [], None, source=DRIVE)})
    run = subprocess.run([sys.executable, "-m", "lipsync_fix", "models", "--json"],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["name"] for line in run.stdout.splitlines()] == ["manual"]
