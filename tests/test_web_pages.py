"""The web catalog's pages through the app's TestClient: status codes, facets and their
counts, paging, escaping of hostile metadata, HTML error pages, the adapter page's sections,
the merge form and the job pages, and reads closed by setting."""

from __future__ import annotations

import re
from html import unescape

import pytest

from hub.services.browse import BrowseFilters
from tests.api_helpers import api_client, make_container, new_token
from tests.web_helpers import add_tiny

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _text(html: str) -> str:
    """Visible-ish text: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _facet(html: str, facet: str) -> dict[str, int]:
    """value -> count of one facet section of the browse page."""
    section = re.search(rf'data-facet="{facet}">(.*?)</section>', html, re.S)
    assert section, f"no facet {facet}"
    pairs = re.findall(
        r'data-value="([^"]*)">.*?<span class="count">(\d+)</span>', section[1], re.S
    )
    return {unescape(v): int(c) for v, c in pairs}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Seven tiny adapters with varied facets, a merge-like child with lineage, a hostile one."""
    tmp = tmp_path_factory.mktemp("web-pages")
    c = make_container(tmp / "home", text_embedder="hash")
    add_tiny(c, tmp, "alpha", seed=1, r=4, tags=("letters",), license="mit",
             description="reverse the letters of a word")  # fmt: skip
    add_tiny(c, tmp, "beta", seed=2, r=8, tags=("letters", "zoo"), license="mit")
    add_tiny(c, tmp, "gamma", seed=3, r=8, tags=("numbers",), license="apache-2.0",
             description="add two numbers")  # fmt: skip
    add_tiny(c, tmp, "delta", seed=4, r=4, tags=("numbers",))
    add_tiny(c, tmp, "epsilon", seed=5, r=4, tags=("numbers",), source="zoo")
    add_tiny(c, tmp, "child", seed=6, r=4, source="merge",
             parents=(("alpha", "merge", 0.5), ("gamma", "merge", 2.0)))  # fmt: skip
    add_tiny(c, tmp, "grandchild", seed=7, r=4, source="merge", parents=(("child", "merge", None),))
    add_tiny(c, tmp, "evil", seed=8, r=4, description=EVIL, tags=(EVIL[:60],), license=EVIL[:40])
    yield c
    c.catalog.close()


@pytest.fixture(scope="module")
def client(catalog):
    with api_client(catalog, run_jobs=False) as cl:
        yield cl


def test_root_redirects_and_pages_carry_security_headers(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/ui/static/loradex.js").status_code == 200
    assert client.get("/ui/static/loradex.css").headers["content-type"].startswith("text/css")
    assert "/ui/" not in client.get("/openapi.json").json()["paths"]  # pages are not the API


def test_facets_count_every_value_and_filters_narrow(client):
    html = client.get("/ui/").text
    assert "1–8 of 8" in _text(html)
    assert _facet(html, "rank") == {"4": 6, "8": 2}
    assert _facet(html, "tag") == {"numbers": 3, "letters": 2, "zoo": 1, EVIL[:60]: 1}
    assert _facet(html, "source") == {"upload": 5, "merge": 2, "zoo": 1}
    assert _facet(html, "license") == {"mit": 2, "apache-2.0": 1, EVIL[:40]: 1}
    assert _facet(html, "base_model") == {"tiny-llama": 8}

    narrowed = client.get("/ui/", params={"tag": "numbers", "rank": "4"}).text
    names = re.findall(r'class="adapter" data-name="([^"]+)"', narrowed)
    assert names == ["delta", "epsilon"]
    # Disjunctive counts: a facet's counts ignore its own filter, apply the others.
    assert _facet(narrowed, "rank") == {"4": 2, "8": 1}  # numbers: delta, epsilon (4), gamma (8)
    assert _facet(narrowed, "tag") == {"numbers": 2, "letters": 1, EVIL[:60]: 1}
    assert _facet(narrowed, "license") == {}  # delta and epsilon have none
    assert "Clear all filters" in narrowed

    by_license = client.get("/ui/", params={"license": "mit"}).text
    assert re.findall(r'data-name="([^"]+)"', by_license) == ["alpha", "beta"]
    by_source = client.get("/ui/", params={"source": "merge"}).text
    assert re.findall(r'data-name="([^"]+)"', by_source) == ["child", "grandchild"]


def test_facets_read_from_columns_equal_the_listed_items(catalog):
    """The page view counts facets over storage FacetRows; they must say what the items say."""
    from hub.services.browse import facet_values

    items, _ = catalog.registry.ls(limit=100)
    rows = catalog.catalog.latest_facet_rows()
    assert [r.version_id for r in rows] == [catalog.catalog.version_id(i.name) for i in items]
    assert [facet_values(r) for r in rows] == [facet_values(i) for i in items]


def test_a_new_version_replaces_the_old_one_in_pages_and_counts(tmp_path):
    c = make_container(tmp_path / "home", text_embedder="hash")
    try:
        add_tiny(c, tmp_path, "solo", seed=1, r=4, tags=("old",), license="mit")
        add_tiny(c, tmp_path, "other", seed=2, r=4)
        add_tiny(c, tmp_path, "solo", seed=3, r=8, tags=("new",))  # version 2: rank 8
        page = c.browse.browse(BrowseFilters())
        assert [(i.name, i.version, i.rank) for i in page.items] == [
            ("other", 1, 4),
            ("solo", 2, 8),
        ]
        counts = {f: {v.value: v.count for v in vals} for f, vals in page.facets.items()}
        assert counts["rank"] == {"4": 1, "8": 1} and counts["tag"] == {"new": 1}
        assert counts["license"] == {"mit": 1}  # the license is the adapter's, not the version's
        assert c.browse.browse(BrowseFilters(tag="old")).total == 0
        assert c.browse.browse(BrowseFilters(rank="8")).items[0].name == "solo"
    finally:
        c.catalog.close()


def test_paging_walks_the_whole_catalog_once(client):
    seen, page, pages = [], 1, None
    while True:
        html = client.get("/ui/", params={"per_page": 3, "page": page}).text
        seen += re.findall(r'class="adapter" data-name="([^"]+)"', html)
        pages = int(re.search(r"page \d+ of (\d+)", html)[1])
        assert ('id="prev-page"' in html) == (page > 1)
        assert ('id="next-page"' in html) == (page < pages)
        if page == pages:
            break
        assert f"page={page + 1}" in re.search(r'id="next-page"[^>]*href="([^"]+)"', html)[1]
        page += 1
    assert pages == 3
    expected = ["alpha", "beta", "child", "delta", "epsilon", "evil", "gamma", "grandchild"]
    assert seen == expected
    beyond = client.get("/ui/", params={"per_page": 3, "page": 9}).text
    assert "data-name" not in beyond and "nothing on page 9 of 3 (8 adapters)" in _text(beyond)
    assert client.get("/ui/", params={"per_page": 0}).status_code == 422


def test_hostile_metadata_is_escaped_everywhere(client):
    for url in ("/ui/", "/ui/adapters/evil", "/ui/search?q=alert+script&mode=text", "/ui/merge"):
        html = client.get(url).text
        assert "<script>alert" not in html and "<img src=x" not in html, url
        assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", ""), url
        if url != "/ui/merge":
            assert "&lt;script&gt;alert(" in html, url
    page = client.get("/ui/adapters/evil").text
    # The only scripts on any page are the one local file.
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/ui/static/loradex.js" defer>']


def test_error_pages_are_html_with_the_right_status(client):
    missing = client.get("/ui/adapters/nope")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert "adapter &#39;nope&#39; not found" in missing.text or "nope" in _text(missing.text)
    assert "404 — not found" in _text(missing.text)
    no_version = client.get("/ui/adapters/alpha/versions/7")
    assert no_version.status_code == 404 and "latest is 1" in _text(no_version.text)
    assert client.get("/ui/no/such/page").status_code == 404
    assert client.get("/ui/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    bad_name = client.get("/ui/adapters/a..b")
    assert bad_name.status_code == 400 and "invalid_name" in bad_name.text
    bad_param = client.get("/ui/adapters/alpha/versions/zero")
    assert bad_param.status_code == 422 and "text/html" in bad_param.headers["content-type"]
    assert client.get("/adapters/nope").headers["content-type"] == "application/json"  # API


def test_adapter_page_shows_card_files_ranks_spectra_lineage_and_similar(client):
    html = client.get("/ui/adapters/child").text
    text = _text(html)
    assert "child v1" in text and "merge" in text
    assert '/adapters/child/versions/1/files/adapter_config.json"' in html
    assert '/adapters/child/versions/1/files/adapter_model.safetensors"' in html
    rows = re.findall(r"<tr><td class=\"mono\">([^<]+)</td><td>(\d+)</td>", html)
    assert [r[0] for r in rows] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    assert {r[1] for r in rows} == {"4"}
    charts = re.findall(r'<svg [^>]*class="chart"[^>]*data-kind="([^"]+)" data-lines="(\d)"', html)
    assert charts == [("self_attn.q_proj", "4"), ("self_attn.v_proj", "4")]
    parents = _text(re.search(r'id="lineage-parents">(.*?)</ul>', html, re.S)[1])
    assert parents == "alpha@1 — merge, weight 0.5 gamma@1 — merge, weight 2"
    children = _text(re.search(r'id="lineage-children">(.*?)</ul>', html, re.S)[1])
    assert children == "grandchild@1 — merge"
    nodes = set(re.findall(r'class="lineage-node" data-ref="([^"]+)"', html))
    assert nodes == {"alpha@1", "gamma@1", "child@1", "grandchild@1"}
    assert 'href="/ui/merge?adapters=child%401"' in html
    similar = re.search(r'id="similar"(.*?)</section>', html, re.S)[1]
    assert "Nearest by card text" in similar  # no weight encoder trained here
    assert 'data-name="child"' not in similar

    grand = client.get("/ui/adapters/grandchild").text
    assert {"alpha@1", "gamma@1", "child@1", "grandchild@1"} == set(
        re.findall(r'class="lineage-node" data-ref="([^"]+)"', grand)
    )  # two generations up


def test_adapter_page_card_editor_holds_the_current_card(client):
    """The form starts from the card as stored (loradex.js sends only what differs from it),
    on a version page too, since the card is the adapter's."""
    html = client.get("/ui/adapters/gamma/versions/1").text
    form = re.search(r'<form id="card-form" [^>]*data-name="([^"]+)"[^>]*>(.*?)</form>', html, re.S)
    assert form[1] == "gamma"
    assert 'maxlength="10000">add two numbers</textarea>' in form[2]
    assert '<input id="card-tags" value="numbers">' in form[2]
    assert '<input id="card-license" maxlength="128" value="apache-2.0">' in form[2]
    bare = client.get("/ui/adapters/delta").text  # no description, no license
    assert 'maxlength="10000"></textarea>' in bare
    assert '<input id="card-license" maxlength="128" value="">' in bare


def test_search_page_finds_by_card_and_reports_problems(client):
    html = client.get("/ui/search", params={"q": "reverse the letters", "mode": "text"}).text
    first = re.search(r'id="search-results">.*?data-name="([^"]+)"', html, re.S)
    assert first and first[1] == "alpha"
    # Search ranks every adapter; the facet filters decide which may appear.
    filtered = client.get("/ui/search", params={"q": "add numbers", "mode": "text", "rank": "8"})
    assert re.findall(r'class="adapter" data-name="([^"]+)"', filtered.text) == ["gamma", "beta"]
    both = client.get("/ui/search", params={"q": "add", "rank": "8", "tag": "letters"}).text
    assert re.findall(r'class="adapter" data-name="([^"]+)"', both) == ["beta"]
    weights = client.get("/ui/search", params={"q": "numbers", "mode": "weights"})
    assert weights.status_code == 400 and "encoder_missing" in weights.text
    assert client.get("/ui/search", params={"q": "x", "mode": "bogus"}).status_code == 422
    empty = client.get("/ui/search", params={"q": "  "}, follow_redirects=False)
    assert empty.status_code == 303 and empty.headers["location"] == "/ui/"


def test_merge_form_offers_methods_params_and_preselects(client):
    html = client.get("/ui/merge", params={"adapters": ["alpha@1", "../etc"]}).text
    assert '<option value="alpha@1" selected>' in html
    assert "../etc" not in html  # not a valid reference: dropped, not echoed
    methods = re.findall(r'<fieldset class="params" data-method="([^"]+)"', html)
    assert {"svd", "ties", "lego", "rmm", "cat"} <= set(methods)
    svd = re.search(r'data-method="svd">(.*?)</fieldset>', html, re.S)[1]
    assert 'data-param="rank" data-kind="int"' in svd
    assert re.search(r'data-param="algorithm" data-kind="choice">\s*<option value="exact" '
                     r"selected>", svd)  # fmt: skip
    ties = re.search(r'data-method="ties"[^>]*>(.*?)</fieldset>', html, re.S)[1]
    assert re.search(r'data-param="density" data-kind="float"[^>]*required', ties)


def test_job_pages_show_state_and_link_the_result(client, catalog):
    job = catalog.catalog.create_job("merge", {"adapters": ["alpha@1"], "name": "m"})
    html = client.get(f"/ui/jobs/{job.id}").text
    assert f'data-job-id="{job.id}" data-state="queued"' in html
    assert 'id="job-cancel"' in html and 'href="/ui/adapters/alpha/versions/1"' in html
    done = catalog.catalog.update_job(
        job.id, state="succeeded", progress=1.0, message="merged into child@1",
        result_version_id=catalog.catalog.version_id("child", 1),
    )  # fmt: skip
    assert done.result == "child@1"
    html = client.get(f"/ui/jobs/{job.id}").text
    assert 'id="job-result-link" href="/ui/adapters/child/versions/1"' in html
    assert 'id="job-cancel"' not in html
    listing = client.get("/ui/jobs").text
    assert f'href="/ui/jobs/{job.id}"' in listing and "succeeded" in listing


def test_closed_reads_need_a_token_by_header_or_cookie(tmp_path):
    c = make_container(tmp_path / "home", text_embedder="hash", api_read_requires_token=True)
    add_tiny(c, tmp_path, "alpha", seed=1)
    token = new_token(c)
    with api_client(c, run_jobs=False) as cl:
        refused = cl.get("/ui/adapters/alpha")
        assert refused.status_code == 401 and "token required" in _text(refused.text)
        ok = cl.get("/ui/adapters/alpha", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        cl.cookies.set("loradex_token", token)
        assert cl.get("/ui/").status_code == 200
        cl.cookies.set("loradex_token", "ldx_wrong")
        assert cl.get("/ui/").status_code == 401
    c.catalog.close()
