"""mini-ImageNet downloads against servers on 127.0.0.1: dead mirrors (an HTML page where the pickle
should be, a refused connection) are skipped, the first good mirror's file is kept, nothing half-written
stays behind, and the result loads through learn2learn."""

from __future__ import annotations

import pytest

from metacompare.data import download
from metacompare.data.download import DownloadError, download_miniimagenet
from metacompare.data.miniimagenet import cache_file, load_split
from tests.faults import cli, closed_port_url, file_server, leftovers
from tests.test_miniimagenet import CLASSES, PER_CLASS, write_cache

HTML = b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>"


@pytest.fixture
def mirrors(tmp_path):
    """Two served folders: 'dead' answers every file with an HTML page, 'good' holds real caches."""
    dead, good = tmp_path / "dead", tmp_path / "good"
    dead.mkdir()
    good.mkdir()
    for split, classes in CLASSES.items():
        write_cache(good, split, classes, shuffle_seed=classes)
        cache_file(dead, split).write_bytes(HTML)
    with file_server(dead) as dead_url, file_server(good) as good_url:
        yield {"dead": dead_url, "good": good_url, "good_dir": good}


def urls(base: str, splits=CLASSES) -> dict[str, list[str]]:
    return {s: [f"{base}/mini-imagenet-cache-{s}.pkl"] for s in splits}


def test_dead_mirrors_are_skipped_and_the_good_one_kept(tmp_path, mirrors):
    root = tmp_path / "data"
    table = {s: [closed_port_url() + "/x.pkl", *urls(mirrors["dead"])[s], *urls(mirrors["good"])[s]] for s in CLASSES}
    paths = download_miniimagenet(root, ["train", "test"], table, timeout=5)
    assert paths == [cache_file(root, "train"), cache_file(root, "test")]
    for split in ("train", "test"):
        assert cache_file(root, split).read_bytes() == cache_file(mirrors["good_dir"], split).read_bytes()
    assert not cache_file(root, "validation").exists() and leftovers(root) == []
    images = load_split(root, "train")
    assert len(images) == CLASSES["train"] * PER_CLASS and images[0][0].shape == (3, 84, 84)


def test_only_dead_mirrors_is_one_line_naming_them_and_leaves_nothing(tmp_path, mirrors):
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as caught:
        download_miniimagenet(root, ["validation"], urls(mirrors["dead"]), timeout=5)
    message = str(caught.value)
    assert "got an HTML page" in message and "tried 1 mirror(s)" in message and mirrors["dead"] in message
    assert "\n" not in message
    assert not cache_file(root, "validation").exists() and leftovers(root) == []


def test_a_present_file_is_kept_without_a_download(tmp_path):
    write_cache(tmp_path, "test", 3)
    before = cache_file(tmp_path, "test").read_bytes()
    assert download_miniimagenet(tmp_path, ["test"], {"test": [closed_port_url() + "/t.pkl"]}, timeout=5)
    assert cache_file(tmp_path, "test").read_bytes() == before


def test_loading_with_download_uses_the_mirror_table(tmp_path, mirrors, monkeypatch):
    monkeypatch.setattr(download, "MINIIMAGENET_MIRRORS", {s: [*urls(mirrors["dead"])[s], *urls(mirrors["good"])[s]]
                                                           for s in CLASSES})
    images = load_split(tmp_path / "fresh", "validation", download=True)
    assert len(images) == CLASSES["validation"] * PER_CLASS


def test_cli_download_fetches_every_split_from_a_base_url(tmp_path, mirrors, capsys):
    root = tmp_path / "cli"
    code, out, err = cli(capsys, "download", "miniimagenet", "--root", root, "--url", mirrors["good"], "--timeout", "5")
    assert code == 0, err
    assert out.split() == [str(cache_file(root, s)) for s in ("train", "validation", "test")]
    code, out, err = cli(capsys, "download", "miniimagenet", "--root", tmp_path / "x", "--url", mirrors["dead"],
                         "--sources", "test", "--timeout", "5")
    assert code == 2 and "HTML page" in err
