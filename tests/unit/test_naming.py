"""Output names and job keys."""

from __future__ import annotations

from bgremove import naming


def test_output_keeps_the_path_and_becomes_png() -> None:
    assert naming.output_name("a/b/photo.jpeg") == "a/b/photo.png"
    assert naming.output_name("photo") == "photo.png"
    assert naming.output_name("x.tar.gz", "out/") == "out/x.tar.png"


def test_dot_segments_and_empty_segments_are_dropped() -> None:
    assert naming.output_name("/../a//./b/../c.jpg", "p/") == "p/a/b/c.png"
    assert naming.output_name("../..", "p/") == "p/image.png"


def test_overlong_names_stay_within_the_limit_and_distinct() -> None:
    a = naming.output_name("d/" + "é" * 600 + "1.jpg", "prefix/")
    b = naming.output_name("d/" + "é" * 600 + "2.jpg", "prefix/")
    assert a != b
    for name in (a, b):
        assert len(name.encode()) <= naming.MAX_OBJECT_NAME_BYTES
        assert name.startswith("prefix/d/") and name.endswith(".png")


def test_job_id_depends_on_the_generation() -> None:
    assert naming.job_id("b", "n", 1) != naming.job_id("b", "n", 2)
    assert len(naming.job_id("b", "n", 1)) == 64


def test_names_with_dot_segments_do_not_survive_urls() -> None:
    assert naming.survives_urls("a/b.c/..d/e.jpg")
    assert not naming.survives_urls("a/../b.jpg")
    assert not naming.survives_urls("./b.jpg")
