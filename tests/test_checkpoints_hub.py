"""The registry of published models and fetching by name, offline (only 127.0.0.1 is ever contacted)."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from sapiens2.checkpoints import PUBLISHED_MODELS, list_models, load_backbone, resolve_checkpoint, resolve_model_name
from sapiens2.checkpoints.hub import cached_checkpoint, download_checkpoint
from sapiens2.errors import ArchMismatchError, CheckpointError, ModelNotAvailableError


@pytest.fixture(autouse=True)
def no_offline_env(monkeypatch):
    """Start every test online as far as huggingface_hub knows (it reads HF_HUB_OFFLINE once, at import)."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def connections(monkeypatch) -> list:
    """Every outgoing socket connection attempted (address). "Fails fast" is checked as "makes at most one
    attempt" rather than by the wall clock, which a loaded machine stretches (a deadline made these flaky)."""
    attempts: list = []
    real = socket.socket.connect

    def connect(self, address):
        attempts.append(address)
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


# -- registry -------------------------------------------------------------------------------------------------
def test_every_published_model_is_listed():
    expected = {f"sapiens2-pretrain-{s}" for s in ("0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b")}
    expected |= {f"sapiens2-{t}-{s}"
                 for t in ("pose", "seg", "normal", "pointmap") for s in ("0.4b", "0.8b", "1b", "5b")}
    expected.add("sapiens2-matting-1b")
    assert set(PUBLISHED_MODELS) == expected
    for name, entry in PUBLISHED_MODELS.items():
        assert entry.repo_id == f"facebook/{name}"
        assert entry.filename == f"sapiens2_{entry.size.replace('-', '_')}_{entry.task}.safetensors"
    assert PUBLISHED_MODELS["sapiens2-matting-1b"].filename == "sapiens2_1b_matting.safetensors"
    assert PUBLISHED_MODELS["sapiens2-seg-0.4b"].filename == "sapiens2_0.4b_seg.safetensors"
    four_k = PUBLISHED_MODELS["sapiens2-pretrain-1b-4k"]
    assert (four_k.arch, four_k.use_tokenizer, four_k.input_size) == ("sapiens2_1b", True, (4096, 3072))
    assert four_k.filename == "sapiens2_1b_4k_pretrain.safetensors"
    pose = PUBLISHED_MODELS["sapiens2-pose-5b"]
    assert (pose.task, pose.arch, pose.use_tokenizer, pose.input_size) == ("pose", "sapiens2_5b", False, (1024, 768))
    assert list_models("matting") == ["sapiens2-matting-1b"]


@pytest.mark.parametrize("name, kwargs, expected", [
    ("sapiens2-pose-1b", {}, "sapiens2-pose-1b"),
    ("pose-1b", {}, "sapiens2-pose-1b"),
    ("1B_Pose", {}, "sapiens2-pose-1b"),
    ("facebook/sapiens2-normal-5b", {}, "sapiens2-normal-5b"),
    ("sapiens2_1b_4k_pretrain", {}, "sapiens2-pretrain-1b-4k"),
    ("sapiens2_0.4b_seg.safetensors", {}, "sapiens2-seg-0.4b"),
    ("0.4b", {"task": "seg"}, "sapiens2-seg-0.4b"),
    ("0.8b", {"task": "segmentation"}, "sapiens2-seg-0.8b"),
    ("1b-4k", {"default_task": "pretrain"}, "sapiens2-pretrain-1b-4k"),
    ("pointmap-0.4b", {"default_task": "pretrain"}, "sapiens2-pointmap-0.4b"),
    ("matting-1b", {"task": "matting"}, "sapiens2-matting-1b"),
])
def test_name_forms(name, kwargs, expected):
    assert resolve_model_name(name, **kwargs).name == expected


def test_bad_names():
    with pytest.raises(ModelNotAvailableError, match="albedo has no public checkpoint"):
        resolve_model_name("albedo-1b")
    with pytest.raises(ModelNotAvailableError, match="albedo has no public checkpoint"):
        resolve_model_name("1b", task="albedo")
    with pytest.raises(ModelNotAvailableError, match=r"no published sapiens2-pose-0.1b.*sapiens2-pose-0.4b"):
        resolve_model_name("pose-0.1b")
    with pytest.raises(ModelNotAvailableError, match="sapiens2-matting-1b"):
        resolve_model_name("matting-5b")
    with pytest.raises(CheckpointError, match="neither an existing file nor a published model name"):
        resolve_model_name("resnet50")
    with pytest.raises(CheckpointError, match="has no task"):
        resolve_model_name("1b")
    with pytest.raises(CheckpointError, match="is a pose model, but task 'seg'"):
        resolve_model_name("pose-1b", task="seg")


# -- fetching -------------------------------------------------------------------------------------------------
def test_offline_mode_fails_fast_with_instructions(monkeypatch, tmp_path, connections):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_backbone("sapiens2-pose-1b", cache_dir=tmp_path)
    assert connections == []  # offline: not one network attempt
    msg = str(info.value)
    assert "offline mode" in msg
    assert "facebook/sapiens2-pose-1b" in msg and "sapiens2_1b_pose.safetensors" in msg
    assert "--checkpoint PATH" in msg and "hf download facebook/sapiens2-pose-1b sapiens2_1b_pose.safetensors" in msg


def test_unreachable_endpoint_fails_fast(monkeypatch, tmp_path, connections):
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_checkpoint("seg-0.4b", cache_dir=tmp_path)
    assert [a for a in connections if a[1] == port] == [("127.0.0.1", port)]  # one try: hf_hub_download alone
    # would retry for ~25 s
    msg = str(info.value)
    assert "could not be reached" in msg and "facebook/sapiens2-seg-0.4b" in msg
    assert "sapiens2_0.4b_seg.safetensors" in msg and "--checkpoint PATH" in msg


def test_silent_server_times_out(tmp_path):
    """A server that accepts the connection but never answers: the short timeout bounds the wait."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        entry = resolve_model_name("pretrain-0.4b")
        start = time.monotonic()
        with pytest.raises(ModelNotAvailableError, match=r"could not be reached \(\w*Timeout"):
            download_checkpoint(entry, cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{server.getsockname()[1]}",
                                timeout=1.0)
        assert time.monotonic() - start > 0.9  # it did wait for the answer (a lower bound: load cannot break it)
        # ...once: no retry. Connections the kernel completed for us are all waiting in the backlog.
        server.setblocking(False)
        accepted = []
        try:
            while True:
                accepted.append(server.accept()[0])
        except BlockingIOError:
            pass
        for conn in accepted:
            conn.close()
        assert len(accepted) == 1


def _put_in_hf_cache(cache_dir, repo_id: str, filename: str, source) -> None:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(source, repo_dir / "snapshots" / commit / filename)


def test_cache_is_used_first_even_offline(monkeypatch, tmp_path, official_dir):
    """A cached file is found without the network; here it holds the tiny arch under the 0.1b name, so the
    registry's arch and the file disagree and the error says so."""
    entry = resolve_model_name("pretrain-0.1b")
    _put_in_hf_cache(tmp_path, entry.repo_id, entry.filename, official_dir / "backbone-tiny.safetensors")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cached_checkpoint(entry, tmp_path).name == entry.filename
    resolved = resolve_checkpoint("0.1b", default_task="pretrain", cache_dir=tmp_path)
    assert resolved.published == entry and resolved.path.is_file()
    with pytest.raises(ArchMismatchError, match="looks like sapiens2_tiny; asked for sapiens2_0.1b"):
        load_backbone("sapiens2-pretrain-0.1b", cache_dir=tmp_path)
    # an explicit arch overrides the registry's
    model = load_backbone("0.1b", arch="tiny", cache_dir=tmp_path)
    assert model.arch.name == "sapiens2_tiny"
