"""Lexical analysis: Kiwi strips particles and endings, English words are stemmed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ragtune.servers.retrieval.korean import get_analyzer, or_query


def test_particles_are_removed_so_whitespace_variants_match() -> None:
    analyzer = get_analyzer()
    assert "검색" in analyzer.terms("검색을")
    assert "검색" in analyzer.terms("검색엔진에서")
    assert "을" not in analyzer.terms("검색을")


def test_english_words_are_lowercased_stemmed_and_stopwords_dropped() -> None:
    assert get_analyzer().terms("The Running tests") == ["run", "test"]


def test_fts_query_quotes_and_ors_unique_terms() -> None:
    query = get_analyzer().fts_query('검색을 검색 "quoted"')
    assert sorted(query.split(" OR ")) == ['"quot"', '"검색"']


def test_or_query_makes_fts5_operators_and_quotes_literal() -> None:
    assert or_query(["NEAR", 'a"b', "x*"]) == '"NEAR" OR "a""b" OR "x*"'
    assert or_query([]) == ""


def test_mixed_text_gets_korean_morphemes_and_english_stems() -> None:
    assert sorted(get_analyzer().terms("FTS5 검색엔진에서 organizations.")) == [
        "5",
        "fts",
        "organiz",
        "검색",
        "엔진",
    ]


def test_the_shared_analyzer_gives_the_same_terms_from_many_threads_at_once() -> None:
    texts = ["The running organizations 검색엔진에서", "복지 서비스를 신청했습니다 tests"] * 16
    expected = [get_analyzer().terms(t) for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda t: get_analyzer().terms(t), texts)) == expected
