"""Services behind the web catalog: singular-value spectra (numbers against a dense SVD, the
per-digest cache), the lineage graph (both directions, deleted parents, caps; SQLite and
PostgreSQL), and the server-side SVG (escaping, cut rows)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hub.core.lora import LoraModule
from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from hub.services.lineage import lineage_graph
from hub.services.spectra import ModuleSpectrum, SpectraService, module_spectrum
from storage.peft_format import read_peft_dir
from tests.api_helpers import make_container
from tests.factories import make_tensors, peft_config, write_adapter_dir
from tests.web_helpers import add_tiny
from web.svg_lineage import MAX_PER_ROW, lineage_svg
from web.svg_spectra import spectra_chart


@pytest.mark.parametrize(
    ("r", "d_in", "d_out", "alpha", "rslora"),
    [
        (1, 8, 8, 2.0, False),
        (4, 64, 32, 8.0, False),
        (8, 96, 40, 16.0, True),
        (16, 20, 300, 3, False),
    ],
)
def test_module_spectrum_matches_the_dense_svd(r, d_in, d_out, alpha, rslora):
    rng = np.random.default_rng(r)
    m = LoraModule(
        A=rng.standard_normal((r, d_in)).astype(np.float32),
        B=rng.standard_normal((d_out, r)).astype(np.float32),
        alpha=alpha,
        use_rslora=rslora,
    )
    dense = np.linalg.svd(m.delta(np.float64), compute_uv=False)[:r]
    got = module_spectrum(m)
    assert got.shape == (r,)
    np.testing.assert_allclose(got, dense, rtol=1e-10, atol=1e-12 * dense[0])
    assert np.all(np.diff(got) <= 0)


def test_effective_rank_and_layer_parsing():
    flat = ModuleSpectrum("model.layers.12.self_attn.q_proj", 4, (2.0, 2.0, 2.0, 2.0))
    assert flat.effective_rank == pytest.approx(4.0) and flat.frobenius == pytest.approx(4.0)
    assert (flat.layer, flat.kind) == (12, "self_attn.q_proj")
    spike = ModuleSpectrum("lm_head", 2, (3.0, 0.0))
    assert spike.effective_rank == pytest.approx(1.0)
    assert (spike.layer, spike.kind) == (None, "lm_head")


def test_spectra_are_cached_per_digest_on_disk_and_recomputed_when_damaged(tmp_path):
    c = make_container(tmp_path / "home")
    add_tiny(c, tmp_path, "a", seed=3, r=4)
    ref = AdapterRef("a", 1)
    first = c.spectra.for_version(ref)
    digest = c.registry.show(ref).digest
    cached = tmp_path / "home" / "cache" / "spectra" / f"{digest}.json"
    assert json.loads(cached.read_text())["digest"] == digest
    loaded = c.registry.load(ref).adapter
    for spectrum in first.modules:
        np.testing.assert_allclose(
            spectrum.singular_values, module_spectrum(loaded.modules[spectrum.name]), rtol=1e-12
        )

    fresh = SpectraService(c.registry, cached.parent)  # a new process: only the disk cache
    fresh.registry = _NoLoad(c.registry)  # type: ignore[assignment]
    assert fresh.for_version(ref) == first

    cached.write_text('{"format": 1, "digest": "' + digest + '", "modules": [{"name": 1}]}')
    again = SpectraService(c.registry, cached.parent).for_version(ref)
    assert again == first and json.loads(cached.read_text())["modules"][0]["name"] != 1
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")  # a cache dir that cannot be made: computed anyway
    assert SpectraService(c.registry, blocked / "spectra").for_version(ref) == first
    assert blocked.read_text() == "not a directory"
    c.catalog.close()


class _NoLoad:
    def __init__(self, registry):
        self._registry = registry

    def show(self, ref):
        return self._registry.show(ref)

    def load(self, ref):
        raise AssertionError("spectra should have come from the cache")


def test_lineage_graph_walks_both_ways_and_remembers_deleted_parents(tmp_path, catalog_url):
    c = make_container(tmp_path / "home", catalog_url)
    add_tiny(c, tmp_path, "root1", seed=1)
    add_tiny(c, tmp_path, "root2", seed=2)
    add_tiny(c, tmp_path, "mid", seed=3, parents=(("root1", "merge", 1.0), ("root2", "merge", 0.5)))
    add_tiny(c, tmp_path, "leaf", seed=4, parents=(("mid", "revert", None),))
    add_tiny(c, tmp_path, "leaf2", seed=5, parents=(("mid", "merge", 1.0), ("root1", "merge", 1)))

    g = lineage_graph(c.registry, AdapterRef("mid"))
    assert g.root == "mid@1"
    assert {k: n.depth for k, n in g.nodes.items()} == {
        "mid@1": 0, "root1@1": -1, "root2@1": -1, "leaf@1": 1, "leaf2@1": 1,
    }  # fmt: skip
    assert [(n.key, e.relation, e.weight) for n, e in g.parents_of("mid@1")] == [
        ("root1@1", "merge", 1.0),
        ("root2@1", "merge", 0.5),
    ]
    assert [(n.key, e.relation) for n, e in g.children_of("mid@1")] == [
        ("leaf@1", "revert"),
        ("leaf2@1", "merge"),
    ]
    assert [[n.key for n in row] for row in g.rows()] == [
        ["root1@1", "root2@1"], ["mid@1"], ["leaf@1", "leaf2@1"],
    ]  # fmt: skip

    c.registry.rm(AdapterRef("root2"))
    g = lineage_graph(c.registry, AdapterRef("leaf"))
    gone = g.nodes["root2@1 (deleted)"]
    assert (gone.exists, gone.label, gone.depth) == (False, "root2@1", -2)
    assert g.nodes["root1@1"].exists and "root2@1" not in g.nodes

    # The name registered again, here as a child of mid (as when a deleted member is restored
    # by reverting the merge under its old name): mid@1 then has a deleted parent root2@1 and a
    # live child root2@1. They are two nodes; the parent's ancestry is not looked up by name.
    add_tiny(c, tmp_path, "root2", seed=7, parents=(("mid", "revert", None),))
    g = lineage_graph(c.registry, AdapterRef("mid"))
    assert [(n.key, n.exists) for n, _ in g.parents_of("mid@1")] == [
        ("root1@1", True),
        ("root2@1 (deleted)", False),
    ]
    assert [(n.key, n.depth, n.source) for n, _ in g.children_of("mid@1")] == [
        ("leaf@1", 1, "upload"),
        ("leaf2@1", 1, "upload"),
        ("root2@1", 1, "upload"),
    ]
    links = {(e.parent, e.child, e.relation) for e in g.links}
    assert {("root2@1 (deleted)", "mid@1", "merge"), ("mid@1", "root2@1", "revert")} <= links

    small = lineage_graph(c.registry, AdapterRef("root1"), max_nodes=3)
    assert small.truncated and len(small.nodes) == 3
    c.catalog.close()


def test_svg_escapes_text_and_cuts_wide_rows(tmp_path):
    c = make_container(tmp_path / "home")
    names = [f"p{i}" for i in range(MAX_PER_ROW + 5)]
    for i, name in enumerate(names):
        add_tiny(c, tmp_path, name, seed=i + 1)
    add_tiny(c, tmp_path, "wide", seed=99, parents=tuple((n, "merge", 1.0) for n in names))
    svg = str(lineage_svg(lineage_graph(c.registry, AdapterRef("wide"))))
    assert svg.count('class="lineage-node"') == MAX_PER_ROW + 1  # drawn parents + itself
    assert "+5 more (listed below)" in svg
    c.catalog.close()

    hostile = ModuleSpectrum('x.layers.0.<script>"', 2, (1.0, 0.5))
    chart = str(spectra_chart(hostile.kind, [hostile], 'id"><script>'))
    assert "<script>" not in chart and "&lt;script&gt;" in chart and "&#34;" in chart


def test_spectra_of_a_higher_rank_module_in_a_real_peft_dir(tmp_path):
    """rank_pattern: modules of different ranks in one adapter keep their own spectra."""
    tensors = make_tensors(r=4, layers=1)
    key = "base_model.model.model.layers.0.self_attn.v_proj"
    rng = np.random.default_rng(0)
    tensors[f"{key}.lora_A.weight"] = rng.standard_normal((6, 64)).astype(np.float32)
    tensors[f"{key}.lora_B.weight"] = rng.standard_normal((32, 6)).astype(np.float32)
    cfg = peft_config(r=4, rank_pattern={"v_proj": 6}, alpha_pattern={"v_proj": 3})
    src = write_adapter_dir(tmp_path / "src", tensors=tensors, config=cfg)
    c = make_container(tmp_path / "home")
    c.registry.add_parsed(read_peft_dir(src), AdapterMeta(name="mixed"))
    spectra = c.spectra.for_version(AdapterRef("mixed"))
    ranks = {m.kind: len(m.singular_values) for m in spectra.modules}
    assert ranks == {"self_attn.q_proj": 4, "self_attn.v_proj": 6}
    v = next(m for m in spectra.modules if m.kind == "self_attn.v_proj")
    A, B = tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"]
    dense = np.linalg.svd((3 / 6) * B.astype(np.float64) @ A.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(v.singular_values, dense[:6], rtol=1e-9)
    c.catalog.close()
